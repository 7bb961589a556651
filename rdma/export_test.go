//go:build rdma

package rdma

import (
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
)

func transportPeerReason(p wire.ReplicaID, r string) transport.PeerReason {
	return transport.PeerReason{Peer: p, Reason: r}
}
