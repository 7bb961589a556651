/* C side of package verbs: flat structs the Go side fills and reads without
 * unions or pointers, and wrappers for libibverbs' static-inline calls and
 * macros (which cgo cannot call). Definitions are in shim.go's preamble,
 * compiled once; only the rdma build tag compiles any of this. */
#ifndef VESTA_VERBS_SHIM_H
#define VESTA_VERBS_SHIM_H

#include <stdint.h>
#include <stddef.h>
#include <infiniband/verbs.h>

/* One send work request as Go writes it. Its SGEs are
 * sges[sge_first .. sge_first+num_sge). */
typedef struct {
	uint64_t wr_id;
	uint64_t remote_addr;
	uint32_t rkey;
	uint32_t imm;       /* host order; converted to network order when posted */
	uint32_t opcode;    /* enum ibv_wr_opcode */
	uint32_t flags;     /* enum ibv_send_flags */
	uint32_t sge_first;
	uint32_t num_sge;
} vb_send_wr;

typedef struct {
	uint64_t wr_id;
	uint32_t sge_first;
	uint32_t num_sge;
} vb_recv_wr;

/* A batch of work requests in one C allocation: what Go fills (in, sge,
 * n, nsge) and the scratch ibv_*_wr array vb_post_* links into a chain. */
typedef struct {
	vb_send_wr *in;
	struct ibv_sge *sge;
	struct ibv_send_wr *wr;
	int cap, sge_cap;
	int n, nsge;
	int bad; /* after a failed post: index of the first WR not posted */
} vb_send_batch;

typedef struct {
	vb_recv_wr *in;
	struct ibv_sge *sge;
	struct ibv_recv_wr *wr;
	int cap, sge_cap;
	int n, nsge;
	int bad;
} vb_recv_batch;

/* One completion, flattened (imm in host order). */
typedef struct {
	uint64_t wr_id;
	uint32_t status;
	uint32_t opcode;
	uint32_t vendor_err;
	uint32_t byte_len;
	uint32_t imm;
	uint32_t qp_num;
	uint32_t wc_flags;
	uint32_t pad;
} vb_wc;

typedef struct {
	char name[IBV_SYSFS_NAME_MAX];
	uint64_t guid; /* host order */
	int node_type;
	int transport_type;
} vb_devinfo;

int vb_device_list(vb_devinfo *out, int max);
struct ibv_context *vb_open_device(const char *name);
int vb_query_port(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *out);
int vb_query_gid(struct ibv_context *ctx, uint8_t port, int index, uint8_t *gid16, uint32_t *type);
struct ibv_mr *vb_reg_mr(struct ibv_pd *pd, uint64_t addr, size_t len, int access);
int vb_set_nonblock(int fd);
struct ibv_cq *vb_get_cq_event(struct ibv_comp_channel *ch);
int vb_req_notify(struct ibv_cq *cq, int solicited_only);
int vb_poll(struct ibv_cq *cq, vb_wc *out, int max);
struct ibv_qp *vb_create_rc_qp(struct ibv_pd *pd, struct ibv_cq *scq, struct ibv_cq *rcq, struct ibv_qp_cap *cap, int sig_all);
int vb_qp_to_init(struct ibv_qp *qp, uint8_t port, int access);
int vb_qp_to_rtr(struct ibv_qp *qp, uint32_t dest_qpn, uint32_t rq_psn, uint64_t gid_hi, uint64_t gid_lo,
		 uint16_t dlid, int is_global, uint8_t port, uint8_t sgid_index, int mtu, uint8_t hop_limit,
		 uint8_t max_dest_rd_atomic, uint8_t min_rnr_timer);
int vb_qp_to_rts(struct ibv_qp *qp, uint32_t sq_psn, uint8_t timeout, uint8_t retry_cnt, uint8_t rnr_retry,
		 uint8_t max_rd_atomic);
int vb_qp_set_state(struct ibv_qp *qp, int state);
int vb_qp_state(struct ibv_qp *qp);
vb_send_batch *vb_send_batch_new(int cap, int sge_cap);
void vb_send_batch_free(vb_send_batch *b);
vb_recv_batch *vb_recv_batch_new(int cap, int sge_cap);
void vb_recv_batch_free(vb_recv_batch *b);
int vb_post_send(struct ibv_qp *qp, vb_send_batch *b);
int vb_post_recv(struct ibv_qp *qp, vb_recv_batch *b);

#endif
