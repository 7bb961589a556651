package zerocopy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"unsafe"

	"pgregory.net/rapid"
)

func concat(bufs net.Buffers) []byte {
	var out []byte
	for _, b := range bufs {
		out = append(out, b...)
	}
	return out
}

// aliases reports whether some entry of bufs starts at p's first byte.
func aliases(bufs net.Buffers, p []byte) bool {
	for _, b := range bufs {
		if len(b) > 0 && unsafe.SliceData(b) == unsafe.SliceData(p) {
			return true
		}
	}
	return false
}

// view is w's output without sealing its open run.
func view(w *Writer) net.Buffers {
	v := append(net.Buffers(nil), w.bufs...)
	if w.fill > w.run {
		v = append(v, w.cur[w.run:w.fill])
	}
	return v
}

// TestWriterModel: any sequence of writes gathers exactly the bytes
// written, in order; referenced items are not copied; consecutive copies
// share iovecs; and Reset or WriteTo gives every chunk and frame back.
func TestWriterModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var p Pool
		chunk := rapid.IntRange(1, 300).Draw(t, "chunkSize")
		minRef := rapid.IntRange(0, 100).Draw(t, "minRef")
		w := NewWriter(&p, chunk, minRef)
		var model []byte
		var refs [][]byte // items that must be referenced, not copied
		sealed := 0       // Buffers calls, each of which may split a run of copies
		data := rapid.SliceOfN(rapid.Byte(), 0, 400)
		t.Repeat(map[string]func(*rapid.T){
			"Write": func(t *rapid.T) {
				b := data.Draw(t, "b")
				if n, err := w.Write(b); n != len(b) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
				model = append(model, b...)
			},
			"WriteString": func(t *rapid.T) {
				s := rapid.String().Draw(t, "s")
				w.WriteString(s)
				model = append(model, s...)
			},
			"WriteByte": func(t *rapid.T) {
				c := rapid.Byte().Draw(t, "c")
				w.WriteByte(c)
				model = append(model, c)
			},
			"Reserve": func(t *rapid.T) {
				b := data.Draw(t, "b")
				r := w.Reserve(len(b))
				if len(r) != len(b) {
					t.Fatalf("Reserve(%d) returned %d bytes", len(b), len(r))
				}
				copy(r, b)
				model = append(model, b...)
			},
			"WriteRef": func(t *rapid.T) {
				b := data.Draw(t, "b")
				w.WriteRef(b)
				model = append(model, b...)
				if len(b) >= minRef && len(b) > 0 {
					refs = append(refs, b)
				}
			},
			"WriteFrame": func(t *rapid.T) {
				b := data.Draw(t, "b")
				buf := p.Get(len(b))
				copy(buf.Bytes(), b)
				f := buf.Share()
				if len(b) >= minRef && len(b) > 0 {
					refs = append(refs, f.Bytes())
				}
				w.WriteFrame(f)
				model = append(model, b...)
			},
			"Buffers": func(t *rapid.T) {
				// Sealing the open run mid-way is allowed; the output must not change.
				if got := concat(w.Buffers()); !bytes.Equal(got, model) {
					t.Fatal("Buffers() differs from the bytes written")
				}
				sealed++
			},
			"": func(t *rapid.T) {
				if w.Len() != int64(len(model)) {
					t.Fatalf("Len() = %d, wrote %d", w.Len(), len(model))
				}
				bufs := view(w)
				if got := concat(bufs); !bytes.Equal(got, model) {
					t.Fatalf("gathered %d bytes differ from the %d written", len(got), len(model))
				}
				for _, r := range refs {
					if !aliases(bufs, r) {
						t.Fatal("an item passed by reference was copied")
					}
				}
				if max := len(w.chunks) + 2*len(refs) + sealed; len(bufs) > max {
					t.Fatalf("%d iovecs for %d chunks, %d references and %d Buffers calls: copies do not share iovecs",
						len(bufs), len(w.chunks), len(refs), sealed)
				}
			},
		})
		if rapid.Bool().Draw(t, "WriteTo") {
			var out bytes.Buffer
			n, err := w.WriteTo(&out)
			if err != nil || n != int64(len(model)) || !bytes.Equal(out.Bytes(), model) {
				t.Fatalf("WriteTo = %d, %v; want %d bytes equal to those written", n, err, len(model))
			}
		} else {
			w.Reset()
		}
		if w.Len() != 0 || len(w.Buffers()) != 0 {
			t.Fatal("the Writer is not empty after Reset")
		}
		if n, counted := p.Outstanding(); counted && n != 0 {
			t.Fatalf("%d buffers outstanding after Reset", n)
		}
	})
}

// TestWriterOverTCP sends gathered output over a loopback TCP connection,
// where net.Buffers uses writev, and checks what arrives.
func TestWriterOverTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no loopback TCP: %v", err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var p Pool
	w := NewWriter(&p, 4096, 256)
	var want []byte
	big := bytes.Repeat([]byte("referenced "), 200)
	for i := range 3000 { // more than 1024 iovecs: several writev calls
		item := []byte{byte(i), byte(i >> 8), 'x', 'y'}
		w.Write(item)
		want = append(want, item...)
		if i%3 == 0 {
			w.WriteRef(big)
			want = append(want, big...)
		}
		if i%7 == 0 {
			b := p.Get(300)
			for j := range b.Bytes() {
				b.Bytes()[j] = byte(i + j)
			}
			want = append(want, b.Bytes()...)
			w.WriteFrame(b.Share())
		}
	}
	if len(w.Buffers()) <= 1024 {
		t.Fatalf("only %d iovecs; the test means to exceed one writev", len(w.Buffers()))
	}
	if n, err := w.WriteTo(conn); err != nil || n != int64(len(want)) {
		t.Fatalf("WriteTo = %d, %v; want %d", n, err, len(want))
	}
	conn.Close()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("received %d bytes, want %d equal bytes", len(b), len(want))
	}
	noLeaks(t, &p)
}

// TestWriterSteadyStateAllocatesNothing: a warm Writer gathering copies,
// references and frames and writing them out allocates nothing.
func TestWriterSteadyStateAllocatesNothing(t *testing.T) {
	if race {
		t.Skip("sync.Pool drops a share of Puts under the race detector")
	}
	var p Pool
	w := NewWriter(&p, 0, -1)
	item := make([]byte, 64)
	big := make([]byte, 4096)
	round := func() {
		for range 300 {
			w.Write(item)
		}
		w.WriteRef(big)
		w.WriteFrame(p.Get(1024).Share())
		copy(w.Reserve(24), item)
		w.WriteTo(io.Discard)
	}
	round()
	if a := testing.AllocsPerRun(100, round); a != 0 {
		t.Fatalf("%v allocs per round, want 0", a)
	}
}
