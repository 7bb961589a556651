//go:build !rdma

package rdma

import (
	"net"

	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
)

// Available reports whether this build has the RDMA transport.
const Available = false

// Transport is the RDMA transport; in this build (no rdma tag) New never
// returns one.
type Transport struct{}

var _ transport.Transport = (*Transport)(nil)

// New returns ErrUnavailable: this build has no libibverbs binding (build
// with -tags rdma).
func New(cfg Config, h transport.Handler) (*Transport, error) { return nil, ErrUnavailable }

// Addr is the side channel's address.
func (t *Transport) Addr() net.Addr { return nil }

// Send implements transport.Transport.
func (t *Transport) Send(msgs []wire.Message) {}

// Stats implements transport.Transport.
func (t *Transport) Stats() transport.Stats { return transport.Stats{} }

// Device is empty: this build has no RDMA device.
func (t *Transport) Device() string { return "" }

// Links returns nothing: this build has no RDMA links.
func (t *Transport) Links() []LinkStats { return nil }

// Close implements transport.Transport.
func (t *Transport) Close() error { return nil }
