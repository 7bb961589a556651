package pmem

import (
	"testing"
)

// The flip word's check must reject every one-, two- and three-bit error, so
// that no small corruption can make it name the previous, still valid slot.
func TestFlipWordRejectsSmallErrors(t *testing.T) {
	// CRC-16/CCITT-FALSE of "123456789" is 0x29B1; check the table-driven
	// code against it byte by byte.
	crc := uint16(0xFFFF)
	for _, b := range []byte("123456789") {
		crc = crc<<8 ^ crc16Table[byte(crc>>8)^b]
	}
	if crc != 0x29B1 {
		t.Fatalf("crc16 of 123456789 = %#x, want 0x29b1", crc)
	}
	checked := 0
	for _, seq := range []uint64{1, 2, 3, 54, 55, 1 << 20, 1<<20 + 1, maxSeq - 1, maxSeq} {
		w := flipWord(seq)
		if got, ok := decodeFlip(w); !ok || got != seq {
			t.Fatalf("flip word for %d decodes to %d, %v", seq, got, ok)
		}
		for i := range 64 {
			for j := i; j < 64; j++ {
				for k := j; k < 64; k++ {
					e := uint64(1)<<i | uint64(1)<<j | uint64(1)<<k // 1, 2 or 3 distinct bits
					if _, ok := decodeFlip(w ^ e); ok {
						t.Fatalf("flip word for %d with bits %d,%d,%d flipped is still valid", seq, i, j, k)
					}
					checked++
				}
			}
		}
	}
	t.Logf("%d corrupted flip words rejected", checked)
	if _, ok := decodeFlip(0); ok {
		t.Fatal("the zero word is a valid flip word")
	}
}

func TestMetaAndSuperblockRoundTrip(t *testing.T) {
	b := make([]byte, metaSize)
	m := meta{seq: 7, head: 64, tail: 4096 + 8}
	m.user[0], m.user[userSize-1] = 1, 2
	m.encode(b)
	got, ok := decodeMeta(b)
	if !ok || got != m {
		t.Fatalf("meta round trip: %+v %v", got, ok)
	}
	sb := superblock{fileSize: 8192, dataOff: headerSize, dataSize: 4096, logID: 5}
	sb.encode(b)
	if got, v, why := decodeSuperblock(b); why != "" || v != formatVersion || got != sb {
		t.Fatalf("superblock round trip: %+v %q", got, why)
	}
	b[20] ^= 1
	if _, _, why := decodeSuperblock(b); why == "" {
		t.Fatal("damaged superblock accepted")
	}
}
