/*
 * netfront.c - a Xen netif frontend in plain C, for netstage's emulated Xen.
 *
 * It joins an emulated world as guest domain DOMID, connects vif DOMID:DEVID served by
 * `netback-user --world DIR --vif DOMID --sink echo`, sends COUNT Ethernet frames on one
 * queue, checks that every frame comes back byte for byte and in order, and closes the vif.
 *
 * Every step follows docs/sim-abi.md (the world's files, grants, event channels, the
 * XenStore sockets and the netif handshake). Ring, request and message formats come from
 * Xen's own public headers, as installed by Debian's libxen-dev: <xen/io/netif.h> (with
 * ring.h and grant_table.h), <xen/io/xenbus.h> and <xen/io/xs_wire.h>. Baseline netif only:
 * one queue, the backend grant-copies, no optional feature is asked for.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The interface version of the headers (Xen 4.14 and later); ring.h wants our barriers. */
#define __XEN_INTERFACE_VERSION__ 0x00040e00
#define xen_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)
#include <xen/io/netif.h>
#include <xen/io/xenbus.h>
#include <xen/io/xs_wire.h>

#define PAGE 4096
#define MEM_PAGES 1024 /* our guest memory: 4 MiB */
#define GRANT_ENTRIES 1024
#define PORTS 16
#define FIRST_GREF 8 /* refs 0-7 are reserved */
#define NTX __CONST_RING_SIZE(netif_tx, PAGE) /* 256 requests */
#define NRX __CONST_RING_SIZE(netif_rx, PAGE)

/* Our frames: the two ring pages, then a buffer page per TX id and per RX id. Frame f is
 * granted as ref FIRST_GREF + f. */
#define TX_RING_FRAME 0
#define RX_RING_FRAME 1
#define TX_BUF_FRAME(id) (2 + (id))
#define RX_BUF_FRAME(id) (2 + NTX + (id))
#define FRAMES (2 + NTX + NRX)
#define GREF(frame) ((grant_ref_t)(FIRST_GREF + (frame)))

/* An event-channel port record, at byte 64 + 64 x port of a domain's `evtchn` file. */
struct port {
    uint32_t state, remote_dom, remote_port, pending, waiters, unused;
    uint64_t sent, received, blocked, reserved[2];
};
_Static_assert(sizeof(struct port) == 64, "a port record is 64 bytes");
enum { ECS_FREE, ECS_UNBOUND, ECS_INTERDOMAIN };

static const char *world;
static unsigned domid = 1, devid = 0, count = 64, backend_id;
static char domdir[PATH_MAX];     /* <world>/dom<DOMID> */
static uint8_t *mem;              /* our guest memory */
static grant_entry_v1_t *gnttab;  /* our grant table */
static void *evtchn;              /* our event-channel table */
static uint32_t port;             /* our end of the channel */
static struct port *peer;         /* the backend's end, in its `evtchn` file */
static int xs = -1;               /* our XenStore connection */
static char fdir[128], bdir[128]; /* the vif's frontend and backend directories */
static uint8_t mac[6];
static netif_tx_front_ring_t tx;
static netif_rx_front_ring_t rx;

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
    int e = errno;
    va_list ap;
    va_start(ap, fmt);
    fputs("c-netfront: ", stderr);
    errno = e; /* for %m */
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* snprintf into out[n]; a path or value that does not fit is an error. */
__attribute__((format(printf, 3, 4))) static void fmt(char *out, size_t n, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int len = vsnprintf(out, n, f, ap);
    va_end(ap);
    if (len < 0 || (size_t)len >= n)
        die("%s... is longer than %zu bytes", out, n - 1);
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- The world: domain files (sim-abi.md sections 1-4) ---- */

/* Creates <domain dir>/name (sim-abi.md section 1): a memfd named after that path (its last
 * 240 bytes), sized, then sealed so that no process, this one included, can ever shrink or
 * grow it (a peer that mapped it would take SIGBUS), and a link to the descriptor in /proc.
 * The descriptor stays open for as long as the domain runs: the link leads to it. Returns
 * the descriptor. */
static int create_sealed(const char *p, size_t len)
{
    size_t n = strlen(p);
    int fd = memfd_create(n > 240 ? p + n - 240 : p, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        die("cannot create a memfd for %s: %m", p);
    if (ftruncate(fd, (off_t)len) < 0)
        die("cannot size %s to %zu bytes: %m", p, len);
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        die("cannot seal %s: %m", p);
    char link[64];
    fmt(link, sizeof link, "/proc/%d/fd/%d", (int)getpid(), fd);
    if (symlink(link, p) < 0)
        die("cannot link %s to %s: %m", p, link);
    return fd;
}

/* Creates (len > 0, a sealed memfd kept open) or opens (len == 0, a peer's file through its
 * link) <domain dir>/name and maps all of it shared. */
static void *map_file(const char *dir, const char *name, size_t len, size_t *size)
{
    char p[PATH_MAX];
    fmt(p, sizeof p, "%s/%s", dir, name);
    int ours = len > 0;
    int fd = ours ? create_sealed(p, len) : open(p, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        die("cannot open %s: %m", p);
    struct stat st;
    if (!ours && fstat(fd, &st) == 0)
        len = (size_t)st.st_size;
    void *m = len ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
    if (m == MAP_FAILED)
        die("cannot map %s (%zu bytes): %m", p, len);
    if (!ours) /* ours stay open: their links lead to the descriptors */
        close(fd);
    if (size)
        *size = len;
    return m;
}

/* The process running domain `dom`, or 0 if none does (then the domain does not exist). */
static pid_t domain_pid(unsigned dom)
{
    char p[PATH_MAX];
    fmt(p, sizeof p, "%s/dom%u/pid", world, dom);
    FILE *f = fopen(p, "r");
    long pid = 0;
    if (f) {
        if (fscanf(f, "%ld", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM) ? (pid_t)pid : 0;
}

static void remove_domain_dir(void)
{
    static const char *files[] = {"pid", "mem", "gnttab", "active", "evtchn"};
    char p[PATH_MAX];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        fmt(p, sizeof p, "%s/%s", domdir, files[i]);
        unlink(p);
    }
    rmdir(domdir);
}

/* Becomes domain DOMID: its directory, its pid, then its four files at their full size. */
static void join_world(void)
{
    struct stat st;
    if (stat(world, &st) < 0 || !S_ISDIR(st.st_mode))
        die("world %s is not a directory: start netback-user --world %s first", world, world);
    fmt(domdir, sizeof domdir, "%s/dom%u", world, domid);
    pid_t old = domain_pid(domid);
    if (old)
        die("domain %u is running already (process %d, %s/pid)", domid, (int)old, domdir);
    remove_domain_dir(); /* left by an instance whose process is gone: a destroyed domain */
    if (mkdir(domdir, 0777) < 0)
        die("cannot create %s: %m", domdir);
    char p[PATH_MAX];
    fmt(p, sizeof p, "%s/pid", domdir);
    FILE *f = fopen(p, "w");
    if (!f || fprintf(f, "%d", (int)getpid()) < 0 || fclose(f) != 0)
        die("cannot write %s: %m", p);
    mem = map_file(domdir, "mem", (size_t)MEM_PAGES * PAGE, NULL);
    gnttab = map_file(domdir, "gnttab", GRANT_ENTRIES * sizeof(grant_entry_v1_t), NULL);
    map_file(domdir, "active", 64 + 8 * GRANT_ENTRIES, NULL); /* the backend's bookkeeping */
    evtchn = map_file(domdir, "evtchn", 64 + 64 * PORTS, NULL);
    __atomic_store_n((uint32_t *)evtchn, PORTS, __ATOMIC_RELEASE);
}

/* Grants our frame `frame` to the backend: the frame first, then flags and domid together
 * in one 32-bit store, so that the backend never sees a valid entry with a stale frame. */
static void grant(uint32_t frame, int readonly)
{
    grant_entry_v1_t *e = &gnttab[GREF(frame)];
    e->frame = frame;
    uint32_t word = GTF_permit_access | (readonly ? GTF_readonly : 0) | backend_id << 16;
    __atomic_store_n((uint32_t *)e, word, __ATOMIC_RELEASE);
}

/* Takes a grant back unless the backend is using it (GTF_reading or GTF_writing set). */
static int end_grant(grant_ref_t ref)
{
    uint32_t *word = (uint32_t *)&gnttab[ref];
    uint32_t v = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    if (v & (GTF_reading | GTF_writing))
        return 0;
    return __atomic_compare_exchange_n(word, &v, v & 0xffff0000u, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}

static struct port *port_at(void *table, uint32_t p)
{
    return (struct port *)((uint8_t *)table + 64 + 64 * (size_t)p);
}

/* EVTCHNOP_alloc_unbound: a free port of ours, for the backend to bind. */
static uint32_t alloc_unbound(void)
{
    for (uint32_t p = 1; p < PORTS; p++) {
        uint32_t expect = ECS_FREE;
        struct port *e = port_at(evtchn, p);
        if (__atomic_compare_exchange_n(&e->state, &expect, ECS_UNBOUND, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED)) {
            e->remote_port = e->pending = e->waiters = 0;
            __atomic_store_n(&e->remote_dom, backend_id, __ATOMIC_RELEASE);
            return p;
        }
    }
    die("no free event-channel port");
}

static long futex(uint32_t *word, int op, uint32_t val, const struct timespec *timeout)
{
    return syscall(SYS_futex, word, op, val, timeout, NULL, 0);
}

/* EVTCHNOP_send: an event on the backend's end of the channel. */
static void notify_backend(void)
{
    __atomic_fetch_or(&peer->pending, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&peer->waiters, __ATOMIC_SEQ_CST) > 0)
        futex(&peer->pending, FUTEX_WAKE, INT_MAX, NULL); /* shared, not private */
}

/* Waits up to `ms` for an event from the backend; returns whether one came. */
static int wait_event(int ms)
{
    struct port *me = port_at(evtchn, port);
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    if (__atomic_exchange_n(&me->pending, 0, __ATOMIC_ACQ_REL))
        return 1;
    __atomic_fetch_add(&me->waiters, 1, __ATOMIC_SEQ_CST);
    uint32_t got = __atomic_exchange_n(&me->pending, 0, __ATOMIC_SEQ_CST);
    if (!got) {
        futex(&me->pending, FUTEX_WAIT, 0, &t);
        got = __atomic_exchange_n(&me->pending, 0, __ATOMIC_ACQ_REL);
    }
    __atomic_fetch_sub(&me->waiters, 1, __ATOMIC_SEQ_CST);
    return got != 0;
}

/* ---- XenStore: the wire protocol of xs_wire.h on <world>/xenstore/dom<DOMID>.sock ---- */

static char xs_body[XENSTORE_PAYLOAD_MAX + 1]; /* the last message's payload, NUL-ended */
static uint32_t xs_len, xs_req_id;

static void xs_connect(void)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    fmt(a.sun_path, sizeof a.sun_path, "%s/xenstore/dom%u.sock", world, domid);
    xs = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int64_t t0 = now_ms(); /* netback-user opens it once it serves --vif DOMID */
    while (connect(xs, (struct sockaddr *)&a, sizeof a) < 0) {
        if (now_ms() - t0 > 10000)
            die("cannot connect to XenStore at %s: %m (is netback-user serving --vif %u?)",
                a.sun_path, domid);
        usleep(20000);
    }
}

static void xs_io(int out, void *buf, size_t len)
{
    for (size_t done = 0; done < len;) {
        ssize_t n = out ? send(xs, (char *)buf + done, len - done, MSG_NOSIGNAL)
                        : recv(xs, (char *)buf + done, len - done, 0);
        if (n <= 0 && !(n < 0 && errno == EINTR))
            die("XenStore connection %s: %s", out ? "write" : "read",
                n == 0 ? "closed by xenstored" : strerror(errno));
        done += n > 0 ? (size_t)n : 0;
    }
}

/* Reads one message (a reply or a watch event) into xs_body; returns its type. */
static uint32_t xs_recv(uint32_t *req_id)
{
    struct xsd_sockmsg h;
    xs_io(0, &h, sizeof h);
    if (h.len > XENSTORE_PAYLOAD_MAX)
        die("xenstored sent a payload of %u bytes", h.len);
    xs_io(0, xs_body, h.len);
    xs_body[h.len] = 0;
    xs_len = h.len;
    *req_id = h.req_id;
    return h.type;
}

/* Sends request `type` with payload "path\0" + arg (arglen bytes) and returns the reply's
 * payload, or NULL if xenstored answered XS_ERROR (the error's name is then in xs_body).
 * Watch events arriving meanwhile are dropped: whoever waits on a watch reads again. */
static const char *xs_call(uint32_t type, const char *path, const char *arg, size_t arglen)
{
    size_t plen = strlen(path) + 1;
    struct {
        struct xsd_sockmsg h;
        char payload[XENSTORE_PAYLOAD_MAX];
    } m = {{type, ++xs_req_id, 0, (uint32_t)(plen + arglen)}, {0}};
    if (plen + arglen > XENSTORE_PAYLOAD_MAX)
        die("XenStore request on %s is too long", path);
    memcpy(m.payload, path, plen);
    memcpy(m.payload + plen, arg, arglen);
    xs_io(1, &m, sizeof m.h + m.h.len);
    for (;;) {
        uint32_t id, t = xs_recv(&id);
        if (t == XS_WATCH_EVENT)
            continue;
        if (id != m.h.req_id)
            die("xenstored answered request %u while %u was outstanding", id, m.h.req_id);
        return t == XS_ERROR ? NULL : xs_body;
    }
}

static const char *xs_read(const char *dir, const char *key)
{
    char p[256];
    fmt(p, sizeof p, "%s/%s", dir, key);
    return xs_call(XS_READ, p, "", 0);
}

__attribute__((format(printf, 3, 4))) static void
xs_write(const char *dir, const char *key, const char *f, ...)
{
    char p[256], v[32]; /* the values: numbers */
    va_list ap;
    va_start(ap, f);
    vsnprintf(v, sizeof v, f, ap);
    va_end(ap);
    fmt(p, sizeof p, "%s/%s", dir, key);
    if (!xs_call(XS_WRITE, p, v, strlen(v)))
        die("cannot write %s = %s in XenStore: %s", p, v, xs_body);
}

static int read_state(const char *dir)
{
    const char *v = xs_read(dir, "state");
    int s = v ? atoi(v) : XenbusStateUnknown;
    return s > 0 && s < 32 ? s : XenbusStateUnknown;
}

/* Waits (on the watch on the backend's state, and at least every 100 ms) until the
 * backend's state is in `want`, a mask of 1 << XenbusState. After we wrote Connected, a
 * Closing or Closed backend with an `error` node has refused us. */
static int wait_backend(unsigned want, const char *what)
{
    int64_t t0 = now_ms();
    for (;;) {
        int s = read_state(bdir);
        if (want & 1u << s)
            return s;
        const char *err = s >= XenbusStateClosing ? xs_read(bdir, "error") : NULL;
        if (err && want == 1u << XenbusStateConnected)
            die("the backend refused the connection: %s", err);
        if (!domain_pid(backend_id))
            die("backend domain %u is gone while waiting for it to %s", backend_id, what);
        if (now_ms() - t0 > 10000)
            die("timed out after 10 s waiting for the backend to %s (%s/state is %d)", what,
                bdir, s);
        struct pollfd p = {xs, POLLIN, 0};
        uint32_t id;
        if (poll(&p, 1, 100) == 1)
            xs_recv(&id); /* a watch event: look again */
    }
}

/* ---- The vif: handshake, traffic, close ---- */

static void find_vif(void)
{
    fmt(fdir, sizeof fdir, "/local/domain/%u/device/vif/%u", domid, devid);
    const char *v;
    for (int64_t t0 = now_ms(); !(v = xs_read(fdir, "backend")); usleep(20000))
        if (now_ms() - t0 > 10000)
            die("no vif %u for domain %u: %s/backend does not exist (%s)", devid, domid, fdir,
                xs_body);
    fmt(bdir, sizeof bdir, "%s", v);
    if (!(v = xs_read(fdir, "backend-id")))
        die("cannot read %s/backend-id: %s", fdir, xs_body);
    backend_id = (unsigned)atoi(v);
    if (!(v = xs_read(fdir, "mac")) || sscanf(v, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0],
                                              &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]) != 6)
        die("cannot read the MAC address in %s/mac", fdir);
}

/* Removes what an earlier frontend of this vif left in its directory (the backend would
 * read its keys too), keeping the toolstack's. */
static void clean_frontend_dir(void)
{
    static const char *keep = "|backend|backend-id|handle|mac|state|mtu|trusted|";
    char names[XENSTORE_PAYLOAD_MAX + 1], p[256], k[80];
    if (!xs_call(XS_DIRECTORY, fdir, "", 0))
        die("cannot list %s: %s", fdir, xs_body);
    uint32_t len = xs_len;
    memcpy(names, xs_body, len + 1);
    for (char *n = names; n < names + len; n += strlen(n) + 1) {
        fmt(k, sizeof k, "|%s|", n);
        fmt(p, sizeof p, "%s/%s", fdir, n);
        if (!strstr(keep, k) && !xs_call(XS_RM, p, "", 0))
            die("cannot remove %s: %s", p, xs_body);
    }
}

static void post_rx(uint16_t id)
{
    netif_rx_request_t *r = RING_GET_REQUEST(&rx, rx.req_prod_pvt++);
    r->id = id;
    r->gref = GREF(RX_BUF_FRAME(id));
}

static void connect_vif(void)
{
    find_vif();
    clean_frontend_dir();
    xs_write(fdir, "state", "%d", XenbusStateInitialising);
    char p[256];
    fmt(p, sizeof p, "%s/state", bdir);
    if (!xs_call(XS_WATCH, p, "be", 3))
        die("cannot watch %s: %s", p, xs_body);
    wait_backend(1u << XenbusStateInitWait, "reach InitWait");
    const char *v = xs_read(bdir, "feature-rx-copy");
    if (!v || strcmp(v, "1") != 0)
        die("the backend does not offer feature-rx-copy");

    /* Rings and buffers: our pages (zero, as every fresh page of `mem`), granted. */
    netif_tx_sring_t *txs = (netif_tx_sring_t *)(mem + TX_RING_FRAME * PAGE);
    netif_rx_sring_t *rxs = (netif_rx_sring_t *)(mem + RX_RING_FRAME * PAGE);
    SHARED_RING_INIT(txs);
    FRONT_RING_INIT(&tx, txs, PAGE);
    SHARED_RING_INIT(rxs);
    FRONT_RING_INIT(&rx, rxs, PAGE);
    grant(TX_RING_FRAME, 0);
    grant(RX_RING_FRAME, 0);
    for (uint16_t id = 0; id < NTX; id++)
        grant(TX_BUF_FRAME(id), 1); /* the backend only reads what we send */
    for (uint16_t id = 0; id < NRX; id++) {
        grant(RX_BUF_FRAME(id), 0); /* it writes what we receive */
        post_rx(id);
    }
    RING_PUSH_REQUESTS(&rx);
    port = alloc_unbound();

    /* Announce, then Connected: this backend connects on Connected (4), not Initialised. */
    xs_write(fdir, "tx-ring-ref", "%u", GREF(TX_RING_FRAME));
    xs_write(fdir, "rx-ring-ref", "%u", GREF(RX_RING_FRAME));
    xs_write(fdir, "event-channel", "%u", port);
    xs_write(fdir, "request-rx-copy", "1");
    xs_write(fdir, "state", "%d", XenbusStateConnected);
    wait_backend(1u << XenbusStateConnected, "connect");

    /* The backend bound our port: its end is `remote_port` of ours, in its `evtchn`. */
    struct port *me = port_at(evtchn, port);
    if (__atomic_load_n(&me->state, __ATOMIC_ACQUIRE) != ECS_INTERDOMAIN)
        die("the backend is Connected but has not bound event channel %u", port);
    uint32_t rport = __atomic_load_n(&me->remote_port, __ATOMIC_ACQUIRE);
    char bd[PATH_MAX];
    size_t len;
    fmt(bd, sizeof bd, "%s/dom%u", world, backend_id);
    void *table = map_file(bd, "evtchn", 0, &len);
    uint32_t n = __atomic_load_n((uint32_t *)table, __ATOMIC_ACQUIRE);
    if (rport == 0 || rport >= n || 64 + 64 * (size_t)n > len)
        die("the backend's port %u is not in its event-channel table (%u ports)", rport, n);
    peer = port_at(table, rport);
    printf("c-netfront: domain %u connected vif %u to domain %u (ports %u <-> %u)\n", domid,
           devid, backend_id, port, rport);
}

static unsigned frame_len(unsigned seq)
{
    return 60 + seq * 97 % 1455; /* 60 to 1514 bytes */
}

/* Frame `seq`: broadcast from our MAC, EtherType 0x88b5 (local experimental), the
 * sequence number, then bytes that depend on it. */
static void make_frame(uint8_t *b, unsigned seq)
{
    unsigned len = frame_len(seq);
    memset(b, 0xff, 6);
    memcpy(b + 6, mac, 6);
    b[12] = 0x88, b[13] = 0xb5;
    b[14] = seq >> 24, b[15] = seq >> 16, b[16] = seq >> 8, b[17] = seq;
    for (unsigned i = 18; i < len; i++)
        b[i] = (uint8_t)(seq + i * 7);
}

/* A frame from the backend, which should be frame `seq` echoed. */
static void check_rx(const netif_rx_response_t *r, unsigned seq)
{
    uint8_t want[PAGE];
    unsigned len = frame_len(seq);
    if (r->id >= NRX)
        die("the backend answered RX request id %u, which we never posted", r->id);
    if (r->status < 0)
        die("frame %u came back with error status %d", seq, r->status);
    if (r->flags & (NETRXF_more_data | NETRXF_extra_info))
        die("frame %u came back in several slots (flags %#x): none were asked for", seq,
            r->flags);
    if ((unsigned)r->status != len || r->offset + len > PAGE)
        die("frame %u came back with %d bytes at offset %u; %u were sent", seq, r->status,
            r->offset, len);
    make_frame(want, seq);
    const uint8_t *got = mem + RX_BUF_FRAME(r->id) * PAGE + r->offset;
    for (unsigned i = 0; i < len; i++)
        if (got[i] != want[i])
            die("frame %u came back different at byte %u: %#x, sent %#x", seq, i, got[i],
                want[i]);
}

/* Sends `count` frames and receives them back; every buffer is reused once answered. */
static void run(void)
{
    uint16_t free_ids[NTX];
    unsigned nfree = 0, sent = 0, answered = 0, received = 0;
    for (unsigned id = NTX; id-- > 0;)
        free_ids[nfree++] = (uint16_t)id;
    int64_t idle_since = now_ms();
    while (received < count || answered < sent) {
        int work = 0, notify, more;
        while (sent < count && nfree > 0 && !RING_FULL(&tx)) {
            uint16_t id = free_ids[--nfree];
            make_frame(mem + TX_BUF_FRAME(id) * PAGE, sent);
            netif_tx_request_t *r = RING_GET_REQUEST(&tx, tx.req_prod_pvt++);
            r->gref = GREF(TX_BUF_FRAME(id));
            r->offset = 0;
            r->flags = 0;
            r->id = id;
            r->size = (uint16_t)frame_len(sent++);
            work = 1;
        }
        RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&tx, notify);
        if (notify)
            notify_backend();
        while (RING_HAS_UNCONSUMED_RESPONSES(&tx)) {
            netif_tx_response_t r = *RING_GET_RESPONSE(&tx, tx.rsp_cons++);
            if (r.status == NETIF_RSP_NULL)
                continue;
            if (r.status != NETIF_RSP_OKAY || r.id >= NTX)
                die("the backend answered TX request id %u with status %d", r.id, r.status);
            free_ids[nfree++] = r.id;
            answered++, work = 1;
        }
        while (RING_HAS_UNCONSUMED_RESPONSES(&rx)) {
            /* A copy: the request posted next may take the same ring slot. */
            netif_rx_response_t r = *RING_GET_RESPONSE(&rx, rx.rsp_cons++);
            if (received == count)
                die("the backend sent more frames than the %u we sent", count);
            check_rx(&r, received++);
            post_rx(r.id);
            work = 1;
        }
        RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&rx, notify);
        if (notify)
            notify_backend();
        if (work) {
            idle_since = now_ms();
            continue;
        }
        RING_FINAL_CHECK_FOR_RESPONSES(&tx, more);
        if (more)
            continue;
        RING_FINAL_CHECK_FOR_RESPONSES(&rx, more);
        if (!more && !wait_event(100) && now_ms() - idle_since > 5000)
            die("nothing from the backend for 5 s: %u frames sent, %u answered, %u received",
                sent, answered, received);
    }
    printf("c-netfront: sent %u frames, received all %u back, every byte as sent\n", sent,
           received);
}

/* Closing, wait for the backend to let go, take the grants and the port back, Closed. */
static void close_vif(void)
{
    xs_write(fdir, "state", "%d", XenbusStateClosing);
    wait_backend(1u << XenbusStateClosing | 1u << XenbusStateClosed, "close");
    for (uint32_t f = 0; f < FRAMES; f++)
        for (int64_t t0 = now_ms(); !end_grant(GREF(f)); usleep(1000))
            if (now_ms() - t0 > 1000)
                die("grant %u is still in use by domain %u after it closed", GREF(f),
                    backend_id);
    __atomic_store_n(&port_at(evtchn, port)->state, ECS_FREE, __ATOMIC_RELEASE);
    xs_write(fdir, "state", "%d", XenbusStateClosed);
    printf("c-netfront: vif %u closed\n", devid);
}

static unsigned number(const char *s, const char *flag)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || errno || v > 65535 * 65536UL || *s == '-')
        die("invalid value '%s' for %s", s, flag);
    return (unsigned)v;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"world", required_argument, NULL, 'w'}, {"domid", required_argument, NULL, 'd'},
        {"devid", required_argument, NULL, 'v'}, {"count", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
    const char *usage = "usage: c-netfront --world DIR [--domid N (1)] [--devid N (0)] "
                        "[--count FRAMES (64)]\n";
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 'w': world = optarg; break;
        case 'd': domid = number(optarg, "--domid"); break;
        case 'v': devid = number(optarg, "--devid"); break;
        case 'n': count = number(optarg, "--count"); break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (!world || optind != argc) {
        fputs(usage, stderr);
        return 2;
    }
    if (domid == 0 || domid > 65535)
        die("--domid must be a guest domain, 1 to 65535");
    join_world();
    xs_connect();
    connect_vif();
    run();
    close_vif();
    remove_domain_dir(); /* the domain is destroyed */
    return 0;
}
