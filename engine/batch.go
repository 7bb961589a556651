package engine

import (
	"encoding/binary"
	"errors"

	"github.com/vestalabs/vesta/engine/wire"
)

// A proposed value is a batch of commands with a header that lets the
// proposing replica find its callers again when the batch is applied:
//
//	origin u32 | incarnation u64 | sequence u64 | count u32 | count × (uvarint length, bytes)
//
// The incarnation is random per Start, so batches proposed before a restart
// never complete callers of the new process.
const batchHeaderSize = 4 + 8 + 8 + 4

type batchHeader struct {
	origin      wire.ReplicaID
	incarnation uint64
	seq         uint64
	count       uint32
}

func appendBatchHeader(buf []byte, h batchHeader) []byte {
	buf = binary.LittleEndian.AppendUint32(buf, uint32(h.origin))
	buf = binary.LittleEndian.AppendUint64(buf, h.incarnation)
	buf = binary.LittleEndian.AppendUint64(buf, h.seq)
	return binary.LittleEndian.AppendUint32(buf, h.count)
}

func appendBatchCommand(buf, cmd []byte) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(cmd)))
	return append(buf, cmd...)
}

var errBadBatch = errors.New("vesta: malformed batch")

// decodeBatch parses a batch; the commands alias data. cmds is reused.
func decodeBatch(data []byte, cmds [][]byte) (batchHeader, [][]byte, error) {
	if len(data) < batchHeaderSize {
		return batchHeader{}, nil, errBadBatch
	}
	h := batchHeader{
		origin:      wire.ReplicaID(binary.LittleEndian.Uint32(data)),
		incarnation: binary.LittleEndian.Uint64(data[4:]),
		seq:         binary.LittleEndian.Uint64(data[12:]),
		count:       binary.LittleEndian.Uint32(data[20:]),
	}
	data = data[batchHeaderSize:]
	cmds = cmds[:0]
	for range h.count {
		n, k := binary.Uvarint(data)
		if k <= 0 || n > uint64(len(data)-k) {
			return h, nil, errBadBatch
		}
		cmds = append(cmds, data[k:k+int(n):k+int(n)])
		data = data[k+int(n):]
	}
	if len(data) != 0 {
		return h, nil, errBadBatch
	}
	return h, cmds, nil
}

// BatchCommands returns the commands of a chosen value, in order, in dst's
// array reused (their bytes alias v.Data): what the runtime hands
// StateMachine.Apply for its slot. A no-op holds none. It is for tools that
// replay a log offline (vestactl replay); a malformed batch is an error,
// which the runtime skips alike on every replica.
func BatchCommands(v wire.Value, dst [][]byte) ([][]byte, error) {
	if v.Kind != wire.ValueBatch {
		return dst, nil
	}
	_, cmds, err := decodeBatch(v.Data, dst)
	return cmds, err
}
