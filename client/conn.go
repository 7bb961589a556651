package client

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/vestalabs/vesta/client/proto"
)

// conn is one connection to one server, shared by every call to it.
type conn struct {
	c     *Client
	addr  string
	ready chan struct{} // closed once dialled (or failed to)

	// Set before ready is closed, then read-only.
	nc net.Conn
	w  *proto.Writer

	mu      sync.Mutex
	pending map[uint64]*call
	nextID  uint64
	err     error // set once the connection failed; pending is then empty
}

// call is one request waiting for its response.
type call struct {
	resp proto.Response // Value copied out of the read buffer
	err  error
	done chan struct{} // one token when resp or err is set
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// conn returns the client's connection to addr, dialling it if there is none.
func (c *Client) conn(ctx context.Context, addr string) (*conn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	cn := c.conns[addr]
	if cn == nil {
		cn = &conn{c: c, addr: addr, ready: make(chan struct{}), pending: map[uint64]*call{}}
		c.conns[addr] = cn
		c.mu.Unlock()
		cn.dial()
	} else {
		c.mu.Unlock()
	}
	select {
	case <-cn.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	cn.mu.Lock()
	err := cn.err
	cn.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return cn, nil
}

// dial connects, sends the preamble and starts the reader; on failure it
// marks the connection failed and forgets it.
func (cn *conn) dial() {
	defer close(cn.ready)
	d := net.Dialer{Timeout: cn.c.opts.DialTimeout}
	nc, err := d.Dial("tcp", cn.addr)
	if err == nil {
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		if _, err = nc.Write(proto.Preamble[:]); err != nil {
			nc.Close()
		}
	}
	if err != nil {
		cn.fail(fmt.Errorf("vesta client: connecting to %s: %w", cn.addr, err))
		return
	}
	w := proto.NewWriter(nc, proto.WriterOptions{
		WriteTimeout: cn.c.opts.WriteTimeout,
		OnError:      func(err error) { cn.fail(fmt.Errorf("vesta client: writing to %s: %w", cn.addr, err)) },
	})
	cn.mu.Lock()
	if cn.err != nil { // the client closed meanwhile
		cn.mu.Unlock()
		nc.Close()
		w.Close()
		return
	}
	cn.nc, cn.w = nc, w
	cn.mu.Unlock()
	go cn.readLoop()
}

// roundTrip sends req (setting its ID) and waits for the response.
func (cn *conn) roundTrip(ctx context.Context, req *proto.Request) (proto.Response, error) {
	cl := callPool.Get().(*call)
	cn.mu.Lock()
	if cn.err != nil {
		err := cn.err
		cn.mu.Unlock()
		callPool.Put(cl)
		return proto.Response{}, err
	}
	cn.nextID++
	id := cn.nextID
	req.ID = id
	cn.pending[id] = cl
	cn.mu.Unlock()
	if err := cn.w.WriteRequest(req); err != nil {
		cn.fail(fmt.Errorf("vesta client: writing to %s: %w", cn.addr, err))
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		cn.mu.Lock()
		_, waiting := cn.pending[id]
		delete(cn.pending, id)
		cn.mu.Unlock()
		if waiting {
			callPool.Put(cl)
			return proto.Response{}, ctx.Err()
		}
		<-cl.done // completed meanwhile
	}
	resp, err := cl.resp, cl.err
	cl.resp, cl.err = proto.Response{}, nil
	callPool.Put(cl)
	return resp, err
}

func (cn *conn) readLoop() {
	rd := proto.NewReader(cn.nc, 64<<10, proto.DefaultMaxFrameSize)
	for {
		body, err := rd.Next()
		if err != nil {
			cn.fail(fmt.Errorf("vesta client: reading from %s: %w", cn.addr, err))
			return
		}
		resp, err := proto.DecodeResponse(body)
		if err != nil {
			cn.fail(fmt.Errorf("vesta client: from %s: %w", cn.addr, err))
			return
		}
		cn.mu.Lock()
		cl := cn.pending[resp.ID]
		delete(cn.pending, resp.ID)
		cn.mu.Unlock()
		if cl == nil {
			continue // its caller gave up
		}
		if len(resp.Value) > 0 {
			resp.Value = append([]byte(nil), resp.Value...)
		} else {
			resp.Value = nil
		}
		cl.resp = resp
		cl.done <- struct{}{}
	}
}

// fail marks the connection failed with err, fails its pending calls, closes
// it and forgets it, so the next call dials again. Idempotent.
func (cn *conn) fail(err error) {
	cn.mu.Lock()
	if cn.err != nil {
		cn.mu.Unlock()
		return
	}
	cn.err = err
	pending := cn.pending
	cn.pending = map[uint64]*call{}
	nc, w := cn.nc, cn.w
	cn.mu.Unlock()
	c := cn.c
	c.mu.Lock()
	if c.conns[cn.addr] == cn {
		delete(c.conns, cn.addr)
	}
	c.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
	for _, cl := range pending {
		cl.err = err
		cl.done <- struct{}{}
	}
	if w != nil {
		// Not here: fail may run on the writer's own goroutine (OnError).
		// With the connection closed, its last flush fails at once.
		go w.Close()
	}
}
