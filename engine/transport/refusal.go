package transport

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/vestalabs/vesta/engine/wire"
)

// A refused handshake is answered with a refusal frame, the same in TCP's
// handshake and in the RDMA transport's side channel (package rdma): type
// FrameRefusal, a payload of RefusalSize bytes,
//
//	0  u32 from     the refusing replica's ID
//	4  u32 to       the refused dialer's ID (the hello's from)
//	8  u64 cluster  the refusing replica's cluster ID
//	16 u8  code     Refuse*
//	17 7 bytes      zero (readers ignore them: room for later)
//
// in a header that carries the dialer's cluster ID (copied from its hello),
// so that the dialer's codec reads it like any of its own frames.
const (
	FrameRefusal = wire.FrameControl + 2
	RefusalSize  = 24
)

// Refusal codes, on the wire.
const (
	RefuseForeignCluster uint8 = 1
	RefuseUnknownPeer    uint8 = 2
	RefuseWrongReplica   uint8 = 3
	// RefuseWrongDirection: the dialer has the higher replica ID, and the
	// transport (RDMA's side channel) has the lower one dial. TCP never
	// sends it.
	RefuseWrongDirection uint8 = 4
)

// ReasonWrongDirection labels a refusal of RefuseWrongDirection.
const ReasonWrongDirection = "wrong_direction"

// RefusalReason is the Reason label of a refusal code; codes this version
// does not know (from a newer peer) are ReasonRefusedOther.
func RefusalReason(code uint8) string {
	switch code {
	case RefuseForeignCluster:
		return ReasonForeignCluster
	case RefuseUnknownPeer:
		return ReasonUnknownPeer
	case RefuseWrongReplica:
		return ReasonWrongReplica
	case RefuseWrongDirection:
		return ReasonWrongDirection
	}
	return ReasonRefusedOther
}

// RefusalPayload is a refusal frame's payload: replica from of cluster
// refuses the hello of replica to for code.
func RefusalPayload(from, to wire.ReplicaID, cluster uint64, code uint8) [RefusalSize]byte {
	var p [RefusalSize]byte
	binary.LittleEndian.PutUint32(p[0:], uint32(from))
	binary.LittleEndian.PutUint32(p[4:], uint32(to))
	binary.LittleEndian.PutUint64(p[8:], cluster)
	p[16] = code
	return p
}

// ParseRefusal reads a refusal payload that replica ourID of cluster
// ourCluster received from the peer it dialed at addr. A payload of the
// wrong size, or addressed to another replica, is an error (not a
// *Refusal).
func ParseRefusal(p []byte, peer wire.ReplicaID, addr string, ourID wire.ReplicaID, ourCluster uint64) (*Refusal, error) {
	if len(p) != RefusalSize {
		return nil, fmt.Errorf("refusal payload is %d bytes, want %d", len(p), RefusalSize)
	}
	if to := wire.ReplicaID(binary.LittleEndian.Uint32(p[4:])); to != ourID {
		return nil, fmt.Errorf("refusal for replica %d, not for us (%d)", to, ourID)
	}
	return &Refusal{
		Peer: peer, Addr: addr, Reason: RefusalReason(p[16]), Code: p[16],
		Replica: wire.ReplicaID(binary.LittleEndian.Uint32(p[0:])), Cluster: binary.LittleEndian.Uint64(p[8:]),
		OurID: ourID, OurCluster: ourCluster,
	}, nil
}

// Refusal is a dial's error when the peer refused our hello and said why.
// Its message names the peer, both cluster IDs or replica IDs, and what to
// check: the refused replica is the one that can tell its operator.
type Refusal struct {
	Peer    wire.ReplicaID // the peer dialled
	Addr    string         // its address
	Reason  string         // RefusalReason(Code)
	Code    uint8
	Replica wire.ReplicaID // the refusing replica's ID
	Cluster uint64         // the refusing replica's cluster ID

	OurID      wire.ReplicaID
	OurCluster uint64
}

func (r *Refusal) Error() string {
	switch r.Reason {
	case ReasonForeignCluster:
		return fmt.Sprintf("peer %d at %s refuses our cluster ID %d: it is of cluster %d (check -cluster-id)",
			r.Peer, r.Addr, r.OurCluster, r.Cluster)
	case ReasonUnknownPeer:
		return fmt.Sprintf("peer %d at %s refuses us: it (replica %d of cluster %d) does not know replica %d (check -peers)",
			r.Peer, r.Addr, r.Replica, r.Cluster, r.OurID)
	case ReasonWrongReplica:
		return fmt.Sprintf("peer %d at %s refuses us: the replica there is %d, not %d (check -peers)",
			r.Peer, r.Addr, r.Replica, r.Peer)
	case ReasonWrongDirection:
		return fmt.Sprintf("peer %d at %s refuses us: it (replica %d) dials replica %d, not the other way (check -peers)",
			r.Peer, r.Addr, r.Replica, r.OurID)
	}
	return fmt.Sprintf("peer %d at %s refuses us with a reason code this version does not know (%d); it is replica %d of cluster %d",
		r.Peer, r.Addr, r.Code, r.Replica, r.Cluster)
}

// RefusalLogEvery is how often, at most, a dialer logs that the same peer
// still refuses it for the same reason; the first refusal is logged at once.
// Redials come every BackoffMax (2 s), so this keeps the error loud without
// flooding the log.
const RefusalLogEvery = time.Minute

// RefusalLog decides which of one peer's refusals are logged: the first of
// an outage, one that differs from the last logged (another reason or
// another refusing replica or cluster), and otherwise one per
// RefusalLogEvery, which says how many there were since the last line.
// One goroutine at a time.
type RefusalLog struct {
	last  time.Time // when the last line was logged; zero: none this outage
	key   refusalKey
	count int // refusals since the last line
}

type refusalKey struct {
	reason  string
	replica wire.ReplicaID
	cluster uint64
}

// Note records a refusal at now; it returns whether to log it, and then how
// many refusals the line stands for (this one included).
func (l *RefusalLog) Note(now time.Time, r *Refusal) (bool, int) {
	key := refusalKey{r.Reason, r.Replica, r.Cluster}
	l.count++
	if !l.last.IsZero() && key == l.key && now.Sub(l.last) < RefusalLogEvery {
		return false, 0
	}
	n := l.count
	l.last, l.key, l.count = now, key, 0
	return true, n
}

// Reset starts a new outage: the next refusal is logged at once.
func (l *RefusalLog) Reset() { *l = RefusalLog{} }
