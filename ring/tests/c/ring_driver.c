/*
 * Test driver for the ABI tests of netstage-ring (tests/c_abi.rs).
 *
 * Compiled at test time against the Xen public headers installed on the system (Debian's
 * libxen-dev); nothing from those headers is copied here. It maps a shared file and executes
 * one command per line from stdin with Xen's own ring.h macros, printing one line per
 * command, so the Rust implementation can be run on the same script and compared: same
 * outputs, same bytes in memory.
 *
 * Usage: ring_driver FILE BYTES    (FILE is created/extended to BYTES and mapped shared)
 *        ring_driver --abi         (prints sizes, offsets and constants)
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ring.h maps xen_mb() to mb() for old interface versions; give it both. */
#define mb() __sync_synchronize()
#define rmb() __sync_synchronize()
#define wmb() __sync_synchronize()

#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/io/ring.h>
#include <xen/io/netif.h>
#include <xen/io/pvcalls.h>

#ifndef xen_mb
#define xen_mb() mb()
#define xen_rmb() rmb()
#define xen_wmb() wmb()
#endif

static unsigned char *mem;
static size_t mem_len;

static int ring_type; /* 0 = none, 1 = tx, 2 = rx */
static size_t ring_bytes;
static struct netif_tx_front_ring txf;
static struct netif_tx_back_ring txb;
static struct netif_rx_front_ring rxf;
static struct netif_rx_back_ring rxb;

static void print_abi(void)
{
#define S(t) printf("sizeof %s %zu\n", #t, sizeof(struct t))
#define O(t, f) printf("offsetof %s.%s %zu\n", #t, #f, offsetof(struct t, f))
#define C(n) printf("const %s %lld\n", #n, (long long)(n))
    S(netif_tx_request);
    O(netif_tx_request, gref);
    O(netif_tx_request, offset);
    O(netif_tx_request, flags);
    O(netif_tx_request, id);
    O(netif_tx_request, size);
    S(netif_tx_response);
    O(netif_tx_response, id);
    O(netif_tx_response, status);
    S(netif_rx_request);
    O(netif_rx_request, id);
    O(netif_rx_request, gref);
    S(netif_rx_response);
    O(netif_rx_response, id);
    O(netif_rx_response, offset);
    O(netif_rx_response, flags);
    O(netif_rx_response, status);
    S(netif_extra_info);
    O(netif_extra_info, type);
    O(netif_extra_info, flags);
    O(netif_extra_info, u.gso.size);
    O(netif_extra_info, u.gso.type);
    O(netif_extra_info, u.gso.features);
    O(netif_extra_info, u.mcast.addr);
    O(netif_extra_info, u.hash.type);
    O(netif_extra_info, u.hash.algorithm);
    O(netif_extra_info, u.hash.value);
    O(netif_tx_sring, req_prod);
    O(netif_tx_sring, req_event);
    O(netif_tx_sring, rsp_prod);
    O(netif_tx_sring, rsp_event);
    O(netif_tx_sring, pvt);
    O(netif_tx_sring, __pad);
    O(netif_tx_sring, ring);
    O(netif_rx_sring, ring);
    printf("entry netif_tx %zu\n", sizeof(union netif_tx_sring_entry));
    printf("entry netif_rx %zu\n", sizeof(union netif_rx_sring_entry));
    printf("ringsize netif_tx 1 %lu\n", (unsigned long)__CONST_RING_SIZE(netif_tx, 4096));
    printf("ringsize netif_tx 2 %lu\n", (unsigned long)__CONST_RING_SIZE(netif_tx, 8192));
    printf("ringsize netif_tx 4 %lu\n", (unsigned long)__CONST_RING_SIZE(netif_tx, 16384));
    printf("ringsize netif_rx 1 %lu\n", (unsigned long)__CONST_RING_SIZE(netif_rx, 4096));
    printf("ringsize netif_rx 2 %lu\n", (unsigned long)__CONST_RING_SIZE(netif_rx, 8192));
    printf("ringsize netif_rx 4 %lu\n", (unsigned long)__CONST_RING_SIZE(netif_rx, 16384));
    S(pvcalls_data_intf);
    O(pvcalls_data_intf, in_cons);
    O(pvcalls_data_intf, in_prod);
    O(pvcalls_data_intf, in_error);
    O(pvcalls_data_intf, out_cons);
    O(pvcalls_data_intf, out_prod);
    O(pvcalls_data_intf, out_error);
    O(pvcalls_data_intf, ring_order);
    O(pvcalls_data_intf, ref);
    for (int o = 0; o <= 9; o++)
        printf("flexsize %d %lu\n", o, (unsigned long)XEN_FLEX_RING_SIZE(o));
    C(NETTXF_csum_blank);
    C(NETTXF_data_validated);
    C(NETTXF_more_data);
    C(NETTXF_extra_info);
    C(NETRXF_data_validated);
    C(NETRXF_csum_blank);
    C(NETRXF_more_data);
    C(NETRXF_extra_info);
    C(NETRXF_gso_prefix);
    C(NETIF_RSP_DROPPED);
    C(NETIF_RSP_ERROR);
    C(NETIF_RSP_OKAY);
    C(NETIF_RSP_NULL);
    C(XEN_NETIF_NR_SLOTS_MIN);
    C(XEN_NETIF_MAX_TX_SIZE);
    C(XEN_NETIF_EXTRA_TYPE_NONE);
    C(XEN_NETIF_EXTRA_TYPE_GSO);
    C(XEN_NETIF_EXTRA_TYPE_MCAST_ADD);
    C(XEN_NETIF_EXTRA_TYPE_MCAST_DEL);
    C(XEN_NETIF_EXTRA_TYPE_HASH);
    C(XEN_NETIF_EXTRA_TYPE_MAX);
    C(XEN_NETIF_EXTRA_FLAG_MORE);
    C(XEN_NETIF_GSO_TYPE_NONE);
    C(XEN_NETIF_GSO_TYPE_TCPV4);
    C(XEN_NETIF_GSO_TYPE_TCPV6);
}

static void fail(const char *what)
{
    printf("error %s\n", what);
    fflush(stdout);
    exit(2);
}

/* ----- shared rings ----- */

static void cmd_init(int type, unsigned pages, unsigned start)
{
    ring_type = type;
    ring_bytes = (size_t)pages * 4096;
    if (ring_bytes > mem_len)
        fail("ring larger than the mapping");
    if (type == 1) {
        struct netif_tx_sring *s = (void *)mem;
        SHARED_RING_INIT(s);
        s->req_prod = s->rsp_prod = start;
        s->req_event = s->rsp_event = start + 1;
        FRONT_RING_ATTACH(&txf, s, start, ring_bytes);
        printf("ok %u\n", RING_SIZE(&txf));
    } else {
        struct netif_rx_sring *s = (void *)mem;
        SHARED_RING_INIT(s);
        s->req_prod = s->rsp_prod = start;
        s->req_event = s->rsp_event = start + 1;
        FRONT_RING_ATTACH(&rxf, s, start, ring_bytes);
        printf("ok %u\n", RING_SIZE(&rxf));
    }
}

/* Backend attach as Linux netback does it: start at the shared rsp_prod. */
static void cmd_attach(int type, unsigned pages)
{
    ring_type = type;
    ring_bytes = (size_t)pages * 4096;
    if (ring_bytes > mem_len)
        fail("ring larger than the mapping");
    if (type == 1) {
        struct netif_tx_sring *s = (void *)mem;
        RING_IDX rsp_prod = *(volatile RING_IDX *)&s->rsp_prod;
        BACK_RING_ATTACH(&txb, s, rsp_prod, ring_bytes);
        printf("ok %u\n", RING_SIZE(&txb));
    } else {
        struct netif_rx_sring *s = (void *)mem;
        RING_IDX rsp_prod = *(volatile RING_IDX *)&s->rsp_prod;
        BACK_RING_ATTACH(&rxb, s, rsp_prod, ring_bytes);
        printf("ok %u\n", RING_SIZE(&rxb));
    }
}

static void cmd_put_req(long long *v)
{
    if (ring_type == 1) {
        struct netif_tx_request r = {
            .gref = v[0], .offset = v[1], .flags = v[2], .id = v[3], .size = v[4]};
        *RING_GET_REQUEST(&txf, txf.req_prod_pvt) = r;
        txf.req_prod_pvt++;
    } else {
        struct netif_rx_request r = {.id = v[0], .gref = v[1]};
        *RING_GET_REQUEST(&rxf, rxf.req_prod_pvt) = r;
        rxf.req_prod_pvt++;
    }
    printf("ok\n");
}

static void cmd_put_rsp(long long *v)
{
    if (ring_type == 1) {
        struct netif_tx_response r = {.id = v[0], .status = v[1]};
        *RING_GET_RESPONSE(&txb, txb.rsp_prod_pvt) = r;
        txb.rsp_prod_pvt++;
    } else {
        struct netif_rx_response r = {
            .id = v[0], .offset = v[1], .flags = v[2], .status = v[3]};
        *RING_GET_RESPONSE(&rxb, rxb.rsp_prod_pvt) = r;
        rxb.rsp_prod_pvt++;
    }
    printf("ok\n");
}

static void cmd_take_req(void)
{
    if (ring_type == 1) {
        if (!RING_HAS_UNCONSUMED_REQUESTS(&txb)) {
            printf("none\n");
            return;
        }
        struct netif_tx_request r;
        RING_COPY_REQUEST(&txb, txb.req_cons, &r);
        txb.req_cons++;
        printf("req %u %u %u %u %u\n", r.gref, r.offset, r.flags, r.id, r.size);
    } else {
        if (!RING_HAS_UNCONSUMED_REQUESTS(&rxb)) {
            printf("none\n");
            return;
        }
        struct netif_rx_request r;
        RING_COPY_REQUEST(&rxb, rxb.req_cons, &r);
        rxb.req_cons++;
        printf("req %u %u\n", r.id, r.gref);
    }
}

static void cmd_take_rsp(void)
{
    if (ring_type == 1) {
        if (!RING_HAS_UNCONSUMED_RESPONSES(&txf)) {
            printf("none\n");
            return;
        }
        struct netif_tx_response r;
        RING_COPY_RESPONSE(&txf, txf.rsp_cons, &r);
        txf.rsp_cons++;
        printf("rsp %u %d\n", r.id, r.status);
    } else {
        if (!RING_HAS_UNCONSUMED_RESPONSES(&rxf)) {
            printf("none\n");
            return;
        }
        struct netif_rx_response r;
        RING_COPY_RESPONSE(&rxf, rxf.rsp_cons, &r);
        rxf.rsp_cons++;
        printf("rsp %u %u %u %d\n", r.id, r.offset, r.flags, r.status);
    }
}

static void ring_cmd(const char *cmd, long long *v)
{
    int notify, work;
    if (!strcmp(cmd, "put_req")) {
        cmd_put_req(v);
    } else if (!strcmp(cmd, "put_rsp")) {
        cmd_put_rsp(v);
    } else if (!strcmp(cmd, "take_req")) {
        cmd_take_req();
    } else if (!strcmp(cmd, "take_rsp")) {
        cmd_take_rsp();
    } else if (!strcmp(cmd, "push_req")) {
        if (ring_type == 1)
            RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&txf, notify);
        else
            RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&rxf, notify);
        printf("notify %d\n", !!notify);
    } else if (!strcmp(cmd, "push_rsp")) {
        if (ring_type == 1)
            RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&txb, notify);
        else
            RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&rxb, notify);
        printf("notify %d\n", !!notify);
    } else if (!strcmp(cmd, "final_req")) {
        if (ring_type == 1)
            RING_FINAL_CHECK_FOR_REQUESTS(&txb, work);
        else
            RING_FINAL_CHECK_FOR_REQUESTS(&rxb, work);
        printf("work %d\n", !!work);
    } else if (!strcmp(cmd, "final_rsp")) {
        if (ring_type == 1)
            RING_FINAL_CHECK_FOR_RESPONSES(&txf, work);
        else
            RING_FINAL_CHECK_FOR_RESPONSES(&rxf, work);
        printf("work %d\n", !!work);
    } else if (!strcmp(cmd, "free")) {
        printf("free %u\n", ring_type == 1 ? RING_FREE_REQUESTS(&txf) : RING_FREE_REQUESTS(&rxf));
    } else {
        fail("unknown command");
    }
}

/* ----- flex data rings (pvcalls layout: indexes page, then 2^order data pages) ----- */

static unsigned flex_order;

static struct pvcalls_data_intf *intf(void) { return (void *)mem; }
static unsigned char *flex_half(int in)
{
    return mem + 4096 + (in ? 0 : XEN_FLEX_RING_SIZE(flex_order));
}

static void cmd_finit(unsigned order)
{
    flex_order = order;
    if (4096 + ((size_t)4096 << order) > mem_len)
        fail("flex ring larger than the mapping");
    struct pvcalls_data_intf *i = intf();
    i->in_cons = i->in_prod = i->out_cons = i->out_prod = 0;
    i->in_error = i->out_error = 0;
    memset(i->pad1, 0, sizeof(i->pad1));
    memset(i->pad2, 0, sizeof(i->pad2));
    i->ring_order = order;
    for (unsigned k = 0; k < (1u << order); k++)
        i->ref[k] = 8 + k;
    printf("ok\n");
}

static void cmd_fopen(unsigned order)
{
    flex_order = order;
    if (4096 + ((size_t)4096 << order) > mem_len)
        fail("flex ring larger than the mapping");
    printf("ok\n");
}

/* Producer, as the pvcalls spec describes it. in = 1: the "in" direction. */
static void cmd_fwrite(int in, size_t len, unsigned seed)
{
    static unsigned char buf[1 << 21];
    struct pvcalls_data_intf *i = intf();
    RING_IDX size = XEN_FLEX_RING_SIZE(flex_order);
    volatile RING_IDX *pp = in ? &i->in_prod : &i->out_prod;
    volatile RING_IDX *cp = in ? &i->in_cons : &i->out_cons;
    RING_IDX cons = *cp, prod = *pp;
    xen_mb();
    RING_IDX queued = pvcalls_queued(prod, cons, size);
    size_t n = len < size - queued ? len : size - queued;
    for (size_t k = 0; k < n; k++)
        buf[k] = (unsigned char)(seed + k * 31 + (k >> 8));
    RING_IDX masked_prod = pvcalls_mask(prod, size);
    pvcalls_write_packet(flex_half(in), buf, n, &masked_prod, pvcalls_mask(cons, size), size);
    xen_wmb();
    *pp = prod + n;
    printf("wrote %zu\n", n);
}

static void cmd_fread(int in, size_t len)
{
    static unsigned char buf[1 << 21];
    struct pvcalls_data_intf *i = intf();
    RING_IDX size = XEN_FLEX_RING_SIZE(flex_order);
    volatile RING_IDX *pp = in ? &i->in_prod : &i->out_prod;
    volatile RING_IDX *cp = in ? &i->in_cons : &i->out_cons;
    RING_IDX cons = *cp, prod = *pp;
    xen_rmb();
    RING_IDX queued = pvcalls_queued(prod, cons, size);
    size_t n = len < queued ? len : queued;
    RING_IDX masked_cons = pvcalls_mask(cons, size);
    pvcalls_read_packet(buf, flex_half(in), n, pvcalls_mask(prod, size), &masked_cons, size);
    xen_mb();
    *cp = cons + n;
    /* FNV-1a over the bytes read, so long reads stay one short line. */
    uint64_t h = 1469598103934665603ULL;
    for (size_t k = 0; k < n; k++)
        h = (h ^ buf[k]) * 1099511628211ULL;
    printf("read %zu %016llx\n", n, (unsigned long long)h);
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--abi")) {
        print_abi();
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: %s FILE BYTES | --abi\n", argv[0]);
        return 2;
    }
    mem_len = strtoull(argv[2], NULL, 0);
    int fd = open(argv[1], O_RDWR | O_CREAT, 0600);
    if (fd < 0 || ftruncate(fd, mem_len) != 0) {
        perror(argv[1]);
        return 2;
    }
    mem = mmap(NULL, mem_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    char line[512];
    while (fgets(line, sizeof(line), stdin)) {
        char cmd[32] = "";
        long long v[6] = {0};
        int n = sscanf(line, "%31s %lld %lld %lld %lld %lld %lld", cmd, &v[0], &v[1], &v[2],
                       &v[3], &v[4], &v[5]);
        if (n < 1)
            continue;
        if (!strcmp(cmd, "quit"))
            break;
        else if (!strcmp(cmd, "init"))
            cmd_init((int)v[0], (unsigned)v[1], (unsigned)v[2]);
        else if (!strcmp(cmd, "attach"))
            cmd_attach((int)v[0], (unsigned)v[1]);
        else if (!strcmp(cmd, "finit"))
            cmd_finit((unsigned)v[0]);
        else if (!strcmp(cmd, "fopen"))
            cmd_fopen((unsigned)v[0]);
        else if (!strcmp(cmd, "fwrite"))
            cmd_fwrite((int)v[0], (size_t)v[1], (unsigned)v[2]);
        else if (!strcmp(cmd, "fread"))
            cmd_fread((int)v[0], (size_t)v[1]);
        else if (!strcmp(cmd, "sync"))
            printf("ok\n");
        else if (ring_type)
            ring_cmd(cmd, v);
        else
            fail("no ring initialised");
        fflush(stdout);
    }
    return 0;
}
