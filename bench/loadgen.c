/*
 * loadgen: the benchmark's WebSocket load generator (one thread, epoll, a minimal RFC 6455 client).
 *
 * Why C: a Python client tops out near 2,000 acks/s on this machine while the server idles, so it
 * would measure itself. This one parses only what it must: the frame header, the "type", the "id"
 * it sent ("m<k>") and the "seq" (by substring scan; every hub under test puts "id" and "seq" before
 * "payload", and our payloads contain neither key).
 *
 * It fails (exit 1) unless every dashboard received every acked seq exactly once, in increasing
 * order, and every message was acked. Results are one JSON object on standard output.
 *
 * Modes:
 *   fanout  A agents send N agent_status each, W unacked in flight per agent (or at --rate msg/s in
 *           total, open loop, latencies measured from the scheduled send time; the agents' sends
 *           are due at the same instants, a burst of A messages, unless --spread 1 offsets
 *           agent a by a/A of the interval); D dashboards.
 *   idle    D dashboards connect (--concurrency handshakes in flight), hold --hold seconds, then
 *           one agent sends N broadcasts one after the other; each must reach every dashboard.
 *   resume  one dashboard asks for the last --expect stored messages and checks them.
 *
 * --ports P1,P2,... spreads the connections over several hubs (nodes of one cluster): agent k and
 * dashboard k connect to port k mod n. The checks are the same: one gapless order for everyone.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { AGENT = 0, DASHBOARD = 1 };
enum { S_CONNECTING, S_HANDSHAKE, S_OPEN, S_CLOSED };

typedef struct {
    uint32_t *v;
    size_t n, cap;
} u32vec;

typedef struct {
    int64_t *v;
    size_t n, cap;
} i64vec;

typedef struct conn {
    int fd, role, state, index, port;
    const char *token;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_off, out_len, out_cap;
    int dirty, epollout;
    int welcomed;
    int64_t welcome_seq;
    /* agent */
    uint32_t first_k, next_k, end_k, acked;
    /* dashboard */
    int64_t last_seq;
    i64vec seqs;
    int resumed;
} conn;

static const char *opt_host = "127.0.0.1", *opt_path = "/", *opt_mode = "fanout";
static int mode_resume = 0; /* opt_mode is "resume" (checked per frame) */
#define MAX_PORTS 16
static int opt_ports[MAX_PORTS], n_ports;
static int opt_port, opt_agents = 1, opt_dashboards = 1, opt_window = 64, opt_concurrency = 256;
static long opt_messages = 1000, opt_expect = 0;
static double opt_rate = 0, opt_timeout = 60, opt_hold = 0;
static int opt_spread = 0; /* --spread 1: agent a's sends are offset by a/A of the interval */
static char **agent_tokens, **dash_tokens;
static int n_agent_tokens, n_dash_tokens;

static int ep;
static conn *conns;
static int n_conns;
static conn **dirty_list;
static int n_dirty;
static uint64_t *send_us;   /* per message k: when it was (or was scheduled to be) sent */
static int64_t *ack_seq;    /* per message k: the seq its ack carried, -1 before */
static u32vec ack_lat, deliv_lat;
/* Open loop: how late each send left after its scheduled time (the generator's own lateness,
 * which every latency above includes). */
static u32vec send_late;
static uint64_t deliveries, acks_total, errors_seen;
static uint32_t rng = 2463534242u;
static int failed;
/* Ids are unique per run: a hub that keeps ids (vibews does) acks a re-sent id as a duplicate. */
static uint32_t run_nonce;
static char fail_msg[512];

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void fail(const char *fmt, ...) {
    if (failed) return;
    failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fail_msg, sizeof fail_msg, fmt, ap);
    va_end(ap);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) die("out of memory");
    return q;
}

static void u32push(u32vec *v, uint32_t x) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 1024;
        v->v = xrealloc(v->v, v->cap * sizeof *v->v);
    }
    v->v[v->n++] = x;
}

static void i64push(i64vec *v, int64_t x) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 256;
        v->v = xrealloc(v->v, v->cap * sizeof *v->v);
    }
    v->v[v->n++] = x;
}

static void mark_dirty(conn *c) {
    if (!c->dirty) {
        c->dirty = 1;
        dirty_list[n_dirty++] = c;
    }
}

static void out_reserve(conn *c, size_t more) {
    if (c->out_off > 0 && c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_len + more > c->out_cap) {
        if (c->out_off > 0) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        while (c->out_len + more > c->out_cap) c->out_cap = c->out_cap ? c->out_cap * 2 : 4096;
        c->out = xrealloc(c->out, c->out_cap);
    }
}

/* A masked client frame (RFC 6455 section 5.3). */
static void send_frame(conn *c, int opcode, const char *data, size_t len) {
    out_reserve(c, len + 14);
    unsigned char *p = (unsigned char *)c->out + c->out_len;
    size_t h = 0;
    p[h++] = 0x80 | opcode;
    if (len < 126) {
        p[h++] = 0x80 | len;
    } else if (len < 65536) {
        p[h++] = 0x80 | 126;
        p[h++] = len >> 8;
        p[h++] = len & 0xff;
    } else {
        p[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) p[h++] = (len >> (8 * i)) & 0xff;
    }
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    unsigned char mask[4] = {rng & 0xff, (rng >> 8) & 0xff, (rng >> 16) & 0xff, rng >> 24};
    memcpy(p + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < len; i++) p[h + i] = (unsigned char)data[i] ^ mask[i & 3];
    c->out_len += h + len;
    mark_dirty(c);
}

static void send_text(conn *c, const char *data, size_t len) { send_frame(c, 1, data, len); }

static void send_agent_message(conn *c, uint32_t k, uint64_t when) {
    char buf[160];
    int n = snprintf(buf, sizeof buf,
                     "{\"type\":\"agent_status\",\"id\":\"m%u.%08x\",\"payload\":{\"state\":\"working\","
                     "\"detail\":\"step %u\"}}",
                     k, run_nonce, k);
    send_us[k] = when;
    send_text(c, buf, (size_t)n);
    if (opt_rate > 0) u32push(&send_late, (uint32_t)(now_us() - when));
}

static void epoll_set(conn *c, int out) {
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    c->epollout = out;
}

static void flush(conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w > 0) {
            c->out_off += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            if (!c->epollout) epoll_set(c, 1);
            return;
        } else {
            fail("write to %s %d: %s", c->role == AGENT ? "agent" : "dashboard", c->index,
                 strerror(errno));
            c->state = S_CLOSED;
            return;
        }
    }
    c->out_off = c->out_len = 0;
    if (c->epollout) epoll_set(c, 0);
}

static void flush_dirty(void) {
    for (int i = 0; i < n_dirty; i++) {
        dirty_list[i]->dirty = 0;
        if (dirty_list[i]->state != S_CLOSED) flush(dirty_list[i]);
    }
    n_dirty = 0;
}

static void start_connect(conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) die("socket: %s (raise the open files limit)", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(c->port)};
    inet_pton(AF_INET, opt_host, &sa.sin_addr);
    int r = connect(c->fd, (struct sockaddr *)&sa, sizeof sa);
    if (r < 0 && errno != EINPROGRESS) die("connect: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->epollout = 1;
    c->state = S_CONNECTING;
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n",
                     opt_path, opt_host, c->port, c->token);
    out_reserve(c, (size_t)n);
    memcpy(c->out + c->out_len, req, (size_t)n);
    c->out_len += (size_t)n;
}

/* The integer after the first occurrence of key in [p, p+len), or -1. */
static int64_t scan_int(const char *p, size_t len, const char *key) {
    const char *q = memmem(p, len, key, strlen(key));
    if (!q) return -1;
    q += strlen(key);
    const char *end = p + len;
    while (q < end && *q == ' ') q++;
    if (q >= end || *q < '0' || *q > '9') return -1;
    int64_t v = 0;
    while (q < end && *q >= '0' && *q <= '9') v = v * 10 + (*q++ - '0');
    return v;
}

static int type_is(const char *p, size_t len, const char *type) {
    const char *q = memmem(p, len < 64 ? len : 64, "\"type\":", 7);
    if (!q) return 0;
    q += 7;
    while (q < p + len && *q == ' ') q++;
    if (q >= p + len || *q++ != '"') return 0;
    size_t tl = strlen(type);
    return (size_t)(p + len - q) > tl && memcmp(q, type, tl) == 0 && q[tl] == '"';
}

/* The first letter of the "type" value (as type_is finds it), or 0. */
static char type_initial(const char *p, size_t len) {
    const char *q = memmem(p, len < 64 ? len : 64, "\"type\":", 7);
    if (!q) return 0;
    q += 7;
    while (q < p + len && *q == ' ') q++;
    return q + 1 < p + len && *q == '"' ? q[1] : 0;
}

/* t: when the read that brought this frame returned. Every frame of one read arrived together;
 * one clock read per read, not per frame, is part of what keeps the generator fast enough to
 * measure hubs that deliver over a million frames a second. */
static void on_text(conn *c, const char *p, size_t len, uint64_t t) {
    if (!c->welcomed) {
        if (!type_is(p, len, "welcome")) {
            fail("first message was not welcome: %.*s", (int)(len < 200 ? len : 200), p);
            return;
        }
        c->welcomed = 1;
        c->welcome_seq = scan_int(p, len, "\"seq\":");
        c->last_seq = c->welcome_seq;
        return;
    }
    /* The type decides everything below; look it up once. (Every hub under test writes "type"
     * first; type_is looks within the first 64 bytes.) */
    char t0 = type_initial(p, len);
    if (t0 == 'e' && type_is(p, len, "error")) {
        errors_seen++;
        fail("server refused a message: %.*s", (int)(len < 300 ? len : 300), p);
        return;
    }
    if (c->role == AGENT) {
        if (t0 == 'a' && type_is(p, len, "ack")) {
            int64_t k = scan_int(p, len, "\"id\":\"m");
            int64_t seq = scan_int(p, len, "\"seq\":");
            if (memmem(p, len, "\"duplicate\":true", 16)) {
                fail("agent %d: acked as a duplicate: %.*s", c->index, (int)(len < 200 ? len : 200), p);
                return;
            }
            if (k < c->first_k || k >= c->end_k || seq < 0 || ack_seq[k] >= 0) {
                fail("agent %d: unexpected ack %.*s", c->index, (int)(len < 200 ? len : 200), p);
                return;
            }
            ack_seq[k] = seq;
            c->acked++;
            acks_total++;
            u32push(&ack_lat, (uint32_t)(t - send_us[k]));
        }
        return; /* dashboards' messages (presence and our own broadcasts) are no agent's business */
    }
    if (t0 == 'r' && type_is(p, len, "resumed")) {
        c->resumed = 1;
        if (!memmem(p, len, "\"complete\":true", 15)) fail("resume was not complete: %.*s", (int)len, p);
        int64_t head = scan_int(p, len, "\"seq\":");
        if (head != c->last_seq) fail("resumed at seq %ld but the last replayed was %ld", (long)head, (long)c->last_seq);
        return;
    }
    int64_t seq = scan_int(p, len, "\"seq\":");
    if (seq < 0) return; /* nothing else without a seq is expected; tolerate it */
    if (seq <= c->last_seq) {
        fail("dashboard %d: seq %ld after %ld (out of order or twice)", c->index, (long)seq,
             (long)c->last_seq);
        return;
    }
    if (mode_resume && seq != c->last_seq + 1) {
        fail("resume: seq %ld after %ld (a gap)", (long)seq, (long)c->last_seq);
        return;
    }
    c->last_seq = seq;
    if (mode_resume) {
        c->seqs.n++;
        return;
    }
    if (t0 != 'a' || !type_is(p, len, "agent_status")) return; /* presence: ordered, not ours */
    int64_t k = scan_int(p, len, "\"id\":\"m");
    if (k < 0 || k >= (int64_t)opt_agents * opt_messages) {
        fail("dashboard %d: relay with a foreign id: %.*s", c->index, (int)(len < 200 ? len : 200), p);
        return;
    }
    i64push(&c->seqs, seq);
    deliveries++;
    u32push(&deliv_lat, (uint32_t)(t - send_us[k]));
}

static void on_frames(conn *c, uint64_t t) {
    size_t off = 0;
    while (c->state == S_OPEN) {
        unsigned char *p = (unsigned char *)c->in + off;
        size_t avail = c->in_len - off;
        if (avail < 2) break;
        int opcode = p[0] & 0x0f;
        if (p[1] & 0x80) {
            fail("server sent a masked frame");
            return;
        }
        uint64_t len = p[1] & 0x7f;
        size_t h = 2;
        if (len == 126) {
            if (avail < 4) break;
            len = ((uint64_t)p[2] << 8) | p[3];
            h = 4;
        } else if (len == 127) {
            if (avail < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | p[2 + i];
            h = 10;
        }
        if (avail < h + len) break;
        if (!(p[0] & 0x80) || opcode == 0) {
            fail("fragmented server messages are not supported by this generator");
            return;
        }
        const char *payload = (const char *)p + h;
        if (opcode == 1) {
            on_text(c, payload, (size_t)len, t);
        } else if (opcode == 9) {
            send_frame(c, 10, payload, (size_t)len);
        } else if (opcode == 8) {
            int code = len >= 2 ? (((unsigned char)payload[0]) << 8) | (unsigned char)payload[1] : 0;
            fail("%s %d: the server closed the connection (%d %.*s)",
                 c->role == AGENT ? "agent" : "dashboard", c->index, code,
                 (int)(len > 2 ? len - 2 : 0), payload + 2);
            c->state = S_CLOSED;
        } else if (opcode != 10) {
            fail("unexpected opcode %d", opcode);
        }
        off += h + len;
    }
    if (off) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
}

static void on_readable(conn *c) {
    for (;;) {
        if (c->in_cap - c->in_len < 65536) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 131072;
            c->in = xrealloc(c->in, c->in_cap);
        }
        ssize_t r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (r == 0) {
            fail("%s %d: the server closed the TCP connection", c->role == AGENT ? "agent" : "dashboard", c->index);
            c->state = S_CLOSED;
            return;
        }
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            fail("read from %s %d (%s): %s", c->role == AGENT ? "agent" : "dashboard", c->index,
                 c->state == S_HANDSHAKE ? "in its handshake" : "open", strerror(errno));
            c->state = S_CLOSED;
            return;
        }
        c->in_len += (size_t)r;
        if (c->state == S_HANDSHAKE) {
            char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
            if (!end) continue;
            if (c->in_len < 12 || memcmp(c->in + 9, "101", 3) != 0) {
                char *eol = memchr(c->in, '\r', c->in_len);
                fail("handshake refused: %.*s", (int)(eol ? eol - c->in : 40), c->in);
                c->state = S_CLOSED;
                return;
            }
            size_t hl = (size_t)(end - c->in) + 4;
            memmove(c->in, c->in + hl, c->in_len - hl);
            c->in_len -= hl;
            c->state = S_OPEN;
        }
        on_frames(c, now_us());
        if (c->state == S_CLOSED) return;
        if ((size_t)r < c->in_cap - c->in_len) return; /* drained */
    }
}

static void poll_once_us(int64_t timeout_us);
static void poll_once(int timeout_ms) { poll_once_us((int64_t)timeout_ms * 1000); }

/* Wait for events at most timeout_us microseconds. epoll_pwait2 (Linux 5.11) takes a timespec:
 * with epoll_wait's milliseconds an open-loop send could leave up to 1 ms after its scheduled
 * time, and since latencies count from the scheduled time, that delay would be charged to every
 * hub under test. */
static void poll_once_us(int64_t timeout_us) {
    static struct epoll_event evs[1024];
    static int no_pwait2;
    flush_dirty();
    if (timeout_us < 0) timeout_us = 0;
    int n;
    if (!no_pwait2) {
        struct timespec ts = {.tv_sec = timeout_us / 1000000, .tv_nsec = (timeout_us % 1000000) * 1000};
        n = epoll_pwait2(ep, evs, 1024, &ts, NULL);
        if (n < 0 && errno == ENOSYS) no_pwait2 = 1;
    }
    if (no_pwait2) n = epoll_wait(ep, evs, 1024, (int)((timeout_us + 999) / 1000));
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        conn *c = evs[i].data.ptr;
        if (c->state == S_CLOSED) continue;
        if (c->state == S_CONNECTING && (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err) {
                fail("connect to %s:%d: %s", opt_host, c->port, strerror(err));
                c->state = S_CLOSED;
                continue;
            }
            c->state = S_HANDSHAKE;
        }
        if (evs[i].events & EPOLLOUT) flush(c);
        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
    }
    flush_dirty();
}

static uint64_t deadline_us;

static void check_deadline(const char *what) {
    if (now_us() <= deadline_us || failed) return;
    fail("timed out after %.1f s waiting for %s", opt_timeout, what);
    int shown = 0;
    for (int i = 0; i < n_conns && shown < 10; i++) {
        conn *c = &conns[i];
        if (c->role == DASHBOARD && (long)c->seqs.n != opt_messages * opt_agents) {
            fprintf(stderr, "loadgen: dashboard %d: state %d, welcomed %d, %zu messages, last seq %ld\n",
                    c->index, c->state, c->welcomed, c->seqs.n, (long)c->last_seq);
            shown++;
        }
    }
}

/* Connect conns [from, to) with at most opt_concurrency handshakes in flight; wait for welcomes. */
static uint64_t connect_all(int from, int to) {
    uint64_t t0 = now_us();
    int next = from, done = 0;
    while (!failed && done < to - from) {
        int inflight = 0;
        done = 0;
        for (int i = from; i < next; i++) {
            if (conns[i].welcomed) done++;
            else inflight++;
        }
        while (next < to && inflight < opt_concurrency) {
            start_connect(&conns[next++]);
            inflight++;
        }
        if (done == to - from) break;
        poll_once(5);
        check_deadline("handshakes and welcomes");
    }
    return now_us() - t0;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(u32vec *v, double q) {
    if (!v->n) return -1;
    size_t i = (size_t)(q * (double)(v->n - 1) + 0.5);
    return v->v[i] / 1000.0;
}

static void print_latencies(void) {
    qsort(ack_lat.v, ack_lat.n, sizeof *ack_lat.v, cmp_u32);
    qsort(deliv_lat.v, deliv_lat.n, sizeof *deliv_lat.v, cmp_u32);
    printf("\"ack_p50_ms\":%.3f,\"ack_p99_ms\":%.3f,\"ack_max_ms\":%.3f,"
           "\"delivery_p50_ms\":%.3f,\"delivery_p99_ms\":%.3f,\"delivery_max_ms\":%.3f",
           pct(&ack_lat, 0.5), pct(&ack_lat, 0.99), pct(&ack_lat, 1.0), pct(&deliv_lat, 0.5),
           pct(&deliv_lat, 0.99), pct(&deliv_lat, 1.0));
    if (send_late.n) {
        qsort(send_late.v, send_late.n, sizeof *send_late.v, cmp_u32);
        printf(",\"send_late_p50_ms\":%.3f,\"send_late_p99_ms\":%.3f,\"send_late_max_ms\":%.3f",
               pct(&send_late, 0.5), pct(&send_late, 0.99), pct(&send_late, 1.0));
    }
}

/* Every dashboard got exactly the acked seqs, in order (order was checked on arrival). */
static void verify_deliveries(int first_dash, int n_dash, long total) {
    int64_t *acked = malloc(sizeof(int64_t) * (size_t)(total ? total : 1));
    for (long k = 0; k < total; k++) {
        if (ack_seq[k] < 0) {
            fail("message m%ld was never acked", k);
            free(acked);
            return;
        }
        acked[k] = ack_seq[k];
    }
    qsort(acked, (size_t)total, sizeof *acked, cmp_i64);
    for (int d = first_dash; d < first_dash + n_dash; d++) {
        conn *c = &conns[d];
        if ((long)c->seqs.n != total) {
            fail("dashboard %d received %zu of %ld messages", c->index, c->seqs.n, total);
            break;
        }
        if (memcmp(c->seqs.v, acked, sizeof(int64_t) * (size_t)total) != 0) {
            fail("dashboard %d received other seqs than were acked", c->index);
            break;
        }
    }
    free(acked);
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void setup(int n_agents, int n_dash) {
    n_conns = n_dash + n_agents;
    conns = calloc((size_t)n_conns, sizeof *conns);
    dirty_list = calloc((size_t)n_conns, sizeof *dirty_list);
    for (int i = 0; i < n_dash; i++) {
        conns[i].role = DASHBOARD;
        conns[i].index = i;
        conns[i].port = opt_ports[i % n_ports];
        conns[i].token = dash_tokens[i % n_dash_tokens];
        conns[i].last_seq = -1;
    }
    for (int a = 0; a < n_agents; a++) {
        conn *c = &conns[n_dash + a];
        c->role = AGENT;
        c->index = a;
        c->port = opt_ports[a % n_ports];
        if (n_agent_tokens == 0) die("no agent tokens");
        c->token = agent_tokens[a % n_agent_tokens];
        c->first_k = c->next_k = (uint32_t)(a * opt_messages);
        c->end_k = (uint32_t)((a + 1) * opt_messages);
    }
    long total = (long)n_agents * opt_messages;
    send_us = calloc((size_t)(total ? total : 1), sizeof *send_us);
    ack_seq = malloc(sizeof *ack_seq * (size_t)(total ? total : 1));
    for (long k = 0; k < total; k++) ack_seq[k] = -1;
}

static void report_head(void) {
    printf("{\"mode\":\"%s\",\"ok\":%s,\"error\":", opt_mode, failed ? "false" : "true");
    if (failed) {
        putchar('"');
        for (char *p = fail_msg; *p; p++) {
            if (*p == '"' || *p == '\\') putchar('\\');
            if ((unsigned char)*p >= 0x20) putchar(*p);
        }
        putchar('"');
    } else {
        printf("null");
    }
}

static int run_fanout(void) {
    setup(opt_agents, opt_dashboards);
    connect_all(0, opt_dashboards);
    connect_all(opt_dashboards, n_conns);
    /* Let presence messages and the agents' own arrival settle: dashboards ignore them anyway. */
    long total = (long)opt_agents * opt_messages;
    uint64_t t0 = now_us();
    double per_agent_us = opt_rate > 0 ? 1e6 * opt_agents / opt_rate : 0;
    uint64_t expected = (uint64_t)total * (uint64_t)opt_dashboards;
    uint64_t last_progress = t0;
    while (!failed && (acks_total < (uint64_t)total || deliveries < expected)) {
        uint64_t t = now_us();
        for (int a = 0; a < opt_agents; a++) {
            conn *c = &conns[opt_dashboards + a];
            if (opt_rate > 0) {
                while (c->next_k < c->end_k) {
                    uint64_t due = t0 + (uint64_t)(per_agent_us * (c->next_k - c->first_k)) + (opt_spread ? (uint64_t)(per_agent_us * a / opt_agents) : 0);
                    if (due > t) break;
                    send_agent_message(c, c->next_k++, due);
                }
            } else {
                while (c->next_k < c->end_k && c->next_k - c->first_k - c->acked < (uint32_t)opt_window)
                    send_agent_message(c, c->next_k++, t);
            }
        }
        uint64_t seen = deliveries;
        if (opt_rate > 0) {
            /* Sleep until the next scheduled send, no longer (nor past 100 ms). */
            uint64_t next_due = UINT64_MAX;
            for (int a = 0; a < opt_agents; a++) {
                conn *c = &conns[opt_dashboards + a];
                if (c->next_k < c->end_k) {
                    uint64_t due = t0 + (uint64_t)(per_agent_us * (c->next_k - c->first_k)) + (opt_spread ? (uint64_t)(per_agent_us * a / opt_agents) : 0);
                    if (due < next_due) next_due = due;
                }
            }
            uint64_t now = now_us();
            int64_t wait = next_due == UINT64_MAX ? 100000 : (int64_t)(next_due - now);
            poll_once_us(next_due != UINT64_MAX && next_due <= now ? 0 : (wait > 100000 ? 100000 : wait));
        } else {
            poll_once(100);
        }
        check_deadline("acks and deliveries");
        /* Everything acked and nothing arriving for a while: something was lost; say what. */
        if (deliveries != seen) last_progress = now_us();
        else if (acks_total == (uint64_t)total && now_us() - last_progress > 2000000) break;
    }
    uint64_t elapsed = now_us() - t0;
    if (!failed) verify_deliveries(0, opt_dashboards, total);
    double secs = elapsed > 0 ? elapsed / 1e6 : 1e-6;
    report_head();
    printf(",\"agents\":%d,\"dashboards\":%d,\"messages\":%ld,\"window\":%d,\"rate\":%.0f,"
           "\"acks\":%lu,\"deliveries\":%lu,\"seconds\":%.3f,\"acks_per_s\":%.0f,"
           "\"deliveries_per_s\":%.0f,",
           opt_agents, opt_dashboards, total, opt_window, opt_rate, (unsigned long)acks_total,
           (unsigned long)deliveries, secs, acks_total / secs, deliveries / secs);
    print_latencies();
    printf("}\n");
    return failed;
}

static int run_idle(void) {
    setup(1, opt_dashboards);
    uint64_t hs = connect_all(0, opt_dashboards);
    if (!failed) {
        printf("#connected %d\n", opt_dashboards);
        fflush(stdout);
        uint64_t hold_until = now_us() + (uint64_t)(opt_hold * 1e6);
        while (!failed && now_us() < hold_until) poll_once(50);
        deadline_us += (uint64_t)(opt_hold * 1e6);
    }
    connect_all(opt_dashboards, n_conns);
    conn *agent = &conns[opt_dashboards];
    u32vec bcast = {0};
    for (long b = 0; b < opt_messages && !failed; b++) {
        uint64_t t0 = now_us();
        send_agent_message(agent, agent->next_k++, t0);
        while (!failed && deliveries < (uint64_t)(b + 1) * (uint64_t)opt_dashboards) {
            poll_once(100);
            check_deadline("a broadcast");
        }
        u32push(&bcast, (uint32_t)(now_us() - t0));
    }
    while (!failed && acks_total < (uint64_t)opt_messages) {
        poll_once(100);
        check_deadline("acks");
    }
    if (!failed) verify_deliveries(0, opt_dashboards, opt_messages);
    qsort(bcast.v, bcast.n, sizeof *bcast.v, cmp_u32);
    report_head();
    printf(",\"connections\":%d,\"handshake_seconds\":%.3f,\"handshakes_per_s\":%.0f,"
           "\"broadcasts\":%zu,\"broadcast_p50_ms\":%.3f,\"broadcast_max_ms\":%.3f}\n",
           opt_dashboards, hs / 1e6, opt_dashboards / ((hs + 1) / 1e6), bcast.n, pct(&bcast, 0.5),
           pct(&bcast, 1.0));
    return failed;
}

static int run_resume(void) {
    opt_messages = 0;
    setup(0, 1);
    connect_all(0, 1);
    conn *c = &conns[0];
    int64_t since = c->welcome_seq - opt_expect;
    if (since < 0) since = 0;
    char buf[128];
    int n = snprintf(buf, sizeof buf, "{\"type\":\"resume\",\"payload\":{\"since\":%ld}}", (long)since);
    c->last_seq = since;
    uint64_t t0 = now_us();
    send_text(c, buf, (size_t)n);
    while (!failed && !c->resumed) {
        poll_once(100);
        check_deadline("the replay");
    }
    uint64_t elapsed = now_us() - t0 + 1;
    long expected = (long)(c->welcome_seq - since);
    if (!failed && (long)c->seqs.n != expected)
        fail("resume replayed %zu messages, expected %ld", c->seqs.n, expected);
    report_head();
    printf(",\"since\":%ld,\"replayed\":%zu,\"seconds\":%.3f,\"messages_per_s\":%.0f}\n", (long)since,
           c->seqs.n, elapsed / 1e6, c->seqs.n / (elapsed / 1e6));
    return failed;
}

static void read_tokens(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die("cannot read %s: %s", path, strerror(errno));
    char line[512], name[128], role[32], secret[256];
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || sscanf(line, "%127s %31s %255s", name, role, secret) != 3) continue;
        char ***list = !strcmp(role, "agent") ? &agent_tokens : &dash_tokens;
        int *count = !strcmp(role, "agent") ? &n_agent_tokens : &n_dash_tokens;
        *list = xrealloc(*list, sizeof(char *) * (size_t)(*count + 1));
        (*list)[(*count)++] = strdup(secret);
    }
    fclose(f);
}

int main(int argc, char **argv) {
    const char *tokens = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) die("%s needs a value", a);
        if (!strcmp(a, "--mode")) opt_mode = v;
        else if (!strcmp(a, "--host")) opt_host = v;
        else if (!strcmp(a, "--port")) opt_port = atoi(v);
        else if (!strcmp(a, "--ports")) {
            for (const char *p = v; *p && n_ports < MAX_PORTS; p = strchr(p, ',') ? strchr(p, ',') + 1 : "")
                opt_ports[n_ports++] = atoi(p);
        }
        else if (!strcmp(a, "--path")) opt_path = v;
        else if (!strcmp(a, "--tokens")) tokens = v;
        else if (!strcmp(a, "--agents")) opt_agents = atoi(v);
        else if (!strcmp(a, "--dashboards")) opt_dashboards = atoi(v);
        else if (!strcmp(a, "--messages")) opt_messages = atol(v);
        else if (!strcmp(a, "--window")) opt_window = atoi(v);
        else if (!strcmp(a, "--rate")) opt_rate = atof(v);
        else if (!strcmp(a, "--spread")) opt_spread = atoi(v);
        else if (!strcmp(a, "--concurrency")) opt_concurrency = atoi(v);
        else if (!strcmp(a, "--hold")) opt_hold = atof(v);
        else if (!strcmp(a, "--expect")) opt_expect = atol(v);
        else if (!strcmp(a, "--timeout")) opt_timeout = atof(v);
        else die("unknown option %s", a);
        i++;
    }
    if (opt_port && !n_ports) opt_ports[n_ports++] = opt_port;
    if (!n_ports || !opt_ports[0] || !tokens)
        die("usage: loadgen --port P | --ports P1,P2 --tokens FILE (NAME ROLE SECRET lines) [--mode fanout|idle|resume] ...");
    read_tokens(tokens);
    if (!n_dash_tokens) die("%s has no dashboard token", tokens);
    raise_nofile();
    ep = epoll_create1(0);
    run_nonce = (uint32_t)now_us() ^ ((uint32_t)getpid() << 16);
    rng ^= run_nonce;
    deadline_us = now_us() + (uint64_t)(opt_timeout * 1e6);
    int rc;
    mode_resume = !strcmp(opt_mode, "resume");
    if (!strcmp(opt_mode, "fanout")) rc = run_fanout();
    else if (!strcmp(opt_mode, "idle")) rc = run_idle();
    else if (!strcmp(opt_mode, "resume")) rc = run_resume();
    else die("unknown mode %s", opt_mode);
    if (rc) fprintf(stderr, "loadgen: FAILED: %s\n", fail_msg);
    return rc ? 1 : 0;
}
