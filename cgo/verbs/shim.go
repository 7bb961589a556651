//go:build rdma

package verbs

/*
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include "shim.h"

int vb_device_list(vb_devinfo *out, int max) {
	int n = 0;
	struct ibv_device **l = ibv_get_device_list(&n);
	if (!l) {
		return errno ? -errno : -ENODEV;
	}
	int k = 0;
	for (int i = 0; i < n && k < max; i++, k++) {
		memset(&out[k], 0, sizeof out[k]);
		strncpy(out[k].name, ibv_get_device_name(l[i]), sizeof out[k].name - 1);
		out[k].guid = be64toh(ibv_get_device_guid(l[i]));
		out[k].node_type = l[i]->node_type;
		out[k].transport_type = l[i]->transport_type;
	}
	ibv_free_device_list(l);
	return k;
}

struct ibv_context *vb_open_device(const char *name) {
	int n = 0;
	struct ibv_device **l = ibv_get_device_list(&n);
	if (!l) {
		if (!errno) errno = ENODEV;
		return NULL;
	}
	struct ibv_context *ctx = NULL;
	int found = 0;
	for (int i = 0; i < n; i++) {
		if (name[0] == 0 || strcmp(ibv_get_device_name(l[i]), name) == 0) {
			found = 1;
			ctx = ibv_open_device(l[i]);
			break;
		}
	}
	int saved = errno;
	ibv_free_device_list(l);
	errno = found ? (saved ? saved : EIO) : ENODEV;
	return ctx;
}

int vb_query_port(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *out) {
	return ibv_query_port(ctx, port, out);
}

int vb_query_gid(struct ibv_context *ctx, uint8_t port, int index, uint8_t *gid16, uint32_t *type) {
	struct ibv_gid_entry e;
	memset(&e, 0, sizeof e);
	int rc = ibv_query_gid_ex(ctx, port, index, &e, 0);
	if (rc == 0) {
		memcpy(gid16, e.gid.raw, 16);
		*type = e.gid_type;
		return 0;
	}
	if (rc < 0) rc = -rc;
	if (rc == ENODATA) {
		// An empty slot: report a zero GID, as ibv_query_gid does.
		memset(gid16, 0, 16);
		*type = 0;
		return 0;
	}
	if (rc != EOPNOTSUPP && rc != ENOSYS) return rc;
	// Old kernels: the GID without its type.
	union ibv_gid g;
	if (ibv_query_gid(ctx, port, index, &g)) return errno ? errno : EIO;
	memcpy(gid16, g.raw, 16);
	*type = (uint32_t)-1;
	return 0;
}

struct ibv_mr *vb_reg_mr(struct ibv_pd *pd, uint64_t addr, size_t len, int access) {
	return ibv_reg_mr(pd, (void *)(uintptr_t)addr, len, access);
}

int vb_set_nonblock(int fd) {
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return errno;
	return 0;
}

struct ibv_cq *vb_get_cq_event(struct ibv_comp_channel *ch) {
	struct ibv_cq *cq = NULL;
	void *ctx = NULL;
	if (ibv_get_cq_event(ch, &cq, &ctx)) return NULL;
	return cq;
}

int vb_req_notify(struct ibv_cq *cq, int solicited_only) {
	return ibv_req_notify_cq(cq, solicited_only);
}

int vb_poll(struct ibv_cq *cq, vb_wc *out, int max) {
	struct ibv_wc tmp[32];
	int got = 0;
	while (got < max) {
		int want = max - got;
		if (want > 32) want = 32;
		int n = ibv_poll_cq(cq, want, tmp);
		if (n < 0) return got ? got : (n == -1 ? -EIO : n);
		for (int i = 0; i < n; i++) {
			vb_wc *o = &out[got + i];
			o->wr_id = tmp[i].wr_id;
			o->status = tmp[i].status;
			o->opcode = tmp[i].opcode;
			o->vendor_err = tmp[i].vendor_err;
			o->byte_len = tmp[i].byte_len;
			o->imm = (tmp[i].wc_flags & IBV_WC_WITH_IMM) ? ntohl(tmp[i].imm_data) : 0;
			o->qp_num = tmp[i].qp_num;
			o->wc_flags = tmp[i].wc_flags;
			o->pad = 0;
		}
		got += n;
		if (n < want) break;
	}
	return got;
}

struct ibv_qp *vb_create_rc_qp(struct ibv_pd *pd, struct ibv_cq *scq, struct ibv_cq *rcq, struct ibv_qp_cap *cap, int sig_all) {
	struct ibv_qp_init_attr a;
	memset(&a, 0, sizeof a);
	a.send_cq = scq;
	a.recv_cq = rcq;
	a.cap = *cap;
	a.qp_type = IBV_QPT_RC;
	a.sq_sig_all = sig_all;
	struct ibv_qp *qp = ibv_create_qp(pd, &a);
	if (qp) *cap = a.cap;
	return qp;
}

static int vb_modify(struct ibv_qp *qp, struct ibv_qp_attr *a, int mask) {
	int rc = ibv_modify_qp(qp, a, mask);
	if (rc < 0) rc = errno ? errno : -rc;
	return rc;
}

int vb_qp_to_init(struct ibv_qp *qp, uint8_t port, int access) {
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_INIT;
	a.pkey_index = 0;
	a.port_num = port;
	a.qp_access_flags = access;
	return vb_modify(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
}

int vb_qp_to_rtr(struct ibv_qp *qp, uint32_t dest_qpn, uint32_t rq_psn, uint64_t gid_hi, uint64_t gid_lo,
		 uint16_t dlid, int is_global, uint8_t port, uint8_t sgid_index, int mtu, uint8_t hop_limit,
		 uint8_t max_dest_rd_atomic, uint8_t min_rnr_timer) {
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = mtu;
	a.dest_qp_num = dest_qpn;
	a.rq_psn = rq_psn;
	a.max_dest_rd_atomic = max_dest_rd_atomic;
	a.min_rnr_timer = min_rnr_timer;
	a.ah_attr.dlid = dlid;
	a.ah_attr.sl = 0;
	a.ah_attr.src_path_bits = 0;
	a.ah_attr.port_num = port;
	if (is_global) {
		a.ah_attr.is_global = 1;
		a.ah_attr.grh.dgid.global.subnet_prefix = htobe64(gid_hi);
		a.ah_attr.grh.dgid.global.interface_id = htobe64(gid_lo);
		a.ah_attr.grh.sgid_index = sgid_index;
		a.ah_attr.grh.hop_limit = hop_limit;
		a.ah_attr.grh.flow_label = 0;
		a.ah_attr.grh.traffic_class = 0;
	}
	return vb_modify(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
		IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
}

int vb_qp_to_rts(struct ibv_qp *qp, uint32_t sq_psn, uint8_t timeout, uint8_t retry_cnt, uint8_t rnr_retry,
		 uint8_t max_rd_atomic) {
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTS;
	a.sq_psn = sq_psn;
	a.timeout = timeout;
	a.retry_cnt = retry_cnt;
	a.rnr_retry = rnr_retry;
	a.max_rd_atomic = max_rd_atomic;
	return vb_modify(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
		IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC);
}

int vb_qp_set_state(struct ibv_qp *qp, int state) {
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.qp_state = state;
	return vb_modify(qp, &a, IBV_QP_STATE);
}

int vb_qp_state(struct ibv_qp *qp) {
	struct ibv_qp_attr a;
	struct ibv_qp_init_attr ia;
	int rc = ibv_query_qp(qp, &a, IBV_QP_STATE, &ia);
	if (rc) return -(rc < 0 ? (errno ? errno : EIO) : rc);
	return a.qp_state;
}

vb_send_batch *vb_send_batch_new(int cap, int sge_cap) {
	vb_send_batch *b = calloc(1, sizeof *b);
	if (!b) return NULL;
	b->in = calloc(cap, sizeof *b->in);
	b->wr = calloc(cap, sizeof *b->wr);
	b->sge = calloc(sge_cap, sizeof *b->sge);
	if (!b->in || !b->wr || !b->sge) {
		vb_send_batch_free(b);
		return NULL;
	}
	b->cap = cap;
	b->sge_cap = sge_cap;
	return b;
}

void vb_send_batch_free(vb_send_batch *b) {
	if (!b) return;
	free(b->in);
	free(b->wr);
	free(b->sge);
	free(b);
}

vb_recv_batch *vb_recv_batch_new(int cap, int sge_cap) {
	vb_recv_batch *b = calloc(1, sizeof *b);
	if (!b) return NULL;
	b->in = calloc(cap, sizeof *b->in);
	b->wr = calloc(cap, sizeof *b->wr);
	b->sge = calloc(sge_cap, sizeof *b->sge);
	if (!b->in || !b->wr || !b->sge) {
		vb_recv_batch_free(b);
		return NULL;
	}
	b->cap = cap;
	b->sge_cap = sge_cap;
	return b;
}

void vb_recv_batch_free(vb_recv_batch *b) {
	if (!b) return;
	free(b->in);
	free(b->wr);
	free(b->sge);
	free(b);
}

// vb_post_send links the batch's WRs into one chain and posts it with one
// ibv_post_send. Go has checked the bounds (n <= cap, SGE ranges inside
// nsge); they are checked again here, since a bad index would be a wild
// pointer.
int vb_post_send(struct ibv_qp *qp, vb_send_batch *b) {
	b->bad = 0;
	if (b->n <= 0) return 0;
	if (b->n > b->cap || b->nsge > b->sge_cap) return EINVAL;
	for (int i = 0; i < b->n; i++) {
		const vb_send_wr *in = &b->in[i];
		struct ibv_send_wr *w = &b->wr[i];
		if ((uint64_t)in->sge_first + in->num_sge > (uint64_t)b->nsge) {
			b->bad = i;
			return EINVAL;
		}
		memset(w, 0, sizeof *w);
		w->wr_id = in->wr_id;
		w->sg_list = in->num_sge ? &b->sge[in->sge_first] : NULL;
		w->num_sge = in->num_sge;
		w->opcode = in->opcode;
		w->send_flags = in->flags;
		switch (in->opcode) {
		case IBV_WR_RDMA_WRITE_WITH_IMM:
			w->imm_data = htonl(in->imm);
			// fallthrough
		case IBV_WR_RDMA_WRITE:
		case IBV_WR_RDMA_READ:
			w->wr.rdma.remote_addr = in->remote_addr;
			w->wr.rdma.rkey = in->rkey;
			break;
		case IBV_WR_SEND_WITH_IMM:
			w->imm_data = htonl(in->imm);
			break;
		default:
			break;
		}
		w->next = i + 1 < b->n ? &b->wr[i + 1] : NULL;
	}
	struct ibv_send_wr *bad = NULL;
	int rc = ibv_post_send(qp, b->wr, &bad);
	if (rc) {
		if (rc < 0) rc = errno ? errno : -rc;
		b->bad = bad ? (int)(bad - b->wr) : 0;
	}
	return rc;
}

int vb_post_recv(struct ibv_qp *qp, vb_recv_batch *b) {
	b->bad = 0;
	if (b->n <= 0) return 0;
	if (b->n > b->cap || b->nsge > b->sge_cap) return EINVAL;
	for (int i = 0; i < b->n; i++) {
		const vb_recv_wr *in = &b->in[i];
		struct ibv_recv_wr *w = &b->wr[i];
		if ((uint64_t)in->sge_first + in->num_sge > (uint64_t)b->nsge) {
			b->bad = i;
			return EINVAL;
		}
		w->wr_id = in->wr_id;
		w->sg_list = in->num_sge ? &b->sge[in->sge_first] : NULL;
		w->num_sge = in->num_sge;
		w->next = i + 1 < b->n ? &b->wr[i + 1] : NULL;
	}
	struct ibv_recv_wr *bad = NULL;
	int rc = ibv_post_recv(qp, b->wr, &bad);
	if (rc) {
		if (rc < 0) rc = errno ? errno : -rc;
		b->bad = bad ? (int)(bad - b->wr) : 0;
	}
	return rc;
}
*/
import "C"

import "syscall"

// Available reports whether this build has the libibverbs binding (the
// rdma build tag). Without it, nothing here can open a device.
const Available = true

// Compile-time checks that the Go constants are libibverbs' values: an
// index other than 0 does not compile.
var (
	_ = [1]int{}[uint(C.IBV_MTU_256)^uint(MTU256)]
	_ = [1]int{}[uint(C.IBV_MTU_4096)^uint(MTU4096)]
	_ = [1]int{}[uint(C.IBV_PORT_ACTIVE)^uint(PortActive)]
	_ = [1]int{}[uint(C.IBV_ACCESS_LOCAL_WRITE)^uint(AccessLocalWrite)]
	_ = [1]int{}[uint(C.IBV_ACCESS_REMOTE_WRITE)^uint(AccessRemoteWrite)]
	_ = [1]int{}[uint(C.IBV_ACCESS_REMOTE_READ)^uint(AccessRemoteRead)]
	_ = [1]int{}[uint(C.IBV_QPS_RESET)^uint(QPReset)]
	_ = [1]int{}[uint(C.IBV_QPS_RTS)^uint(QPRTS)]
	_ = [1]int{}[uint(C.IBV_QPS_ERR)^uint(QPErr)]
	_ = [1]int{}[uint(C.IBV_WR_RDMA_WRITE)^uint(OpRDMAWrite)]
	_ = [1]int{}[uint(C.IBV_WR_RDMA_WRITE_WITH_IMM)^uint(OpRDMAWriteWithImm)]
	_ = [1]int{}[uint(C.IBV_WR_SEND)^uint(OpSend)]
	_ = [1]int{}[uint(C.IBV_WR_SEND_WITH_IMM)^uint(OpSendWithImm)]
	_ = [1]int{}[uint(C.IBV_WR_RDMA_READ)^uint(OpRDMARead)]
	_ = [1]int{}[uint(C.IBV_SEND_SIGNALED)^uint(SendSignaled)]
	_ = [1]int{}[uint(C.IBV_SEND_INLINE)^uint(SendInline)]
	_ = [1]int{}[uint(C.IBV_WC_SEND)^uint(WCSend)]
	_ = [1]int{}[uint(C.IBV_WC_RDMA_WRITE)^uint(WCRDMAWrite)]
	_ = [1]int{}[uint(C.IBV_WC_RECV)^uint(WCRecv)]
	_ = [1]int{}[uint(C.IBV_WC_RECV_RDMA_WITH_IMM)^uint(WCRecvRDMAWithImm)]
	_ = [1]int{}[uint(C.IBV_WC_REM_ACCESS_ERR)^uint(WCRemAccessErr)]
	_ = [1]int{}[uint(C.IBV_WC_WR_FLUSH_ERR)^uint(WCWRFlushErr)]
	_ = [1]int{}[uint(C.IBV_WC_RNR_RETRY_EXC_ERR)^uint(WCRNRRetryExcErr)]
	_ = [1]int{}[uint(C.IBV_GID_TYPE_ROCE_V2)^uint(GIDTypeRoCEv2)]
	_ = [1]int{}[uint(C.IBV_WC_WITH_IMM)^wcWithImm]
)

const wcWithImm = 2

// errOf makes an *Error of a call's name and an errno (positive, or
// negative as some verbs return it; 0 when the call set none).
func errOf(op string, errno int) error {
	if errno < 0 {
		errno = -errno
	}
	return &Error{Op: op, Errno: syscall.Errno(errno)}
}

// errnoOf extracts the errno cgo returned with a call's result.
func errnoOf(op string, err error) error {
	if e, ok := err.(syscall.Errno); ok && e != 0 {
		return &Error{Op: op, Errno: e}
	}
	return &Error{Op: op, Errno: syscall.EIO}
}
