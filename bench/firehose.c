/*
 * firehose: the fastest hub this machine can run, to prove the load generator is not the bottleneck.
 *
 * One thread, epoll. Any Bearer token is accepted (the role is read from the generator's tokens
 * file by secret). Each agent frame is answered with an ack and relayed to every dashboard as a
 * frame built once with snprintf and copied into each dashboard's buffer; every buffer is written
 * with one write() per loop turn. No JSON parsing beyond finding "id". If the generator consumes
 * this hub's output at several times vibews' rate, vibews' figures measure vibews.
 *
 * usage: firehose PORT SECRETS_FILE   (NAME ROLE SECRET lines, as the generator reads)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct client {
    int fd, open, dashboard, dirty, epollout;
    char name[64];
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_off, out_len, out_cap;
    struct client *next_dash;
} client;

static int ep;
static client *dashboards;
static client **dirty;
static size_t n_dirty, dirty_cap;
static long seq;
static char secrets[256][256], names[256][64];
static int roles[256], n_secrets;

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) {
        perror("realloc");
        exit(2);
    }
    return q;
}

static void mark(client *c) {
    if (c->dirty) return;
    c->dirty = 1;
    if (n_dirty == dirty_cap) {
        dirty_cap = dirty_cap ? dirty_cap * 2 : 1024;
        dirty = xrealloc(dirty, dirty_cap * sizeof *dirty);
    }
    dirty[n_dirty++] = c;
}

static void put(client *c, const void *data, size_t len) {
    if (c->out_len + len > c->out_cap) {
        if (c->out_off) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        while (c->out_len + len > c->out_cap) c->out_cap = c->out_cap ? c->out_cap * 2 : 8192;
        c->out = xrealloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    mark(c);
}

/* An unmasked server text frame into buf (which has room for len + 10). */
static size_t frame(unsigned char *buf, const char *data, size_t len) {
    size_t h = 0;
    buf[h++] = 0x81;
    if (len < 126) {
        buf[h++] = len;
    } else {
        buf[h++] = 126;
        buf[h++] = len >> 8;
        buf[h++] = len & 0xff;
    }
    memcpy(buf + h, data, len);
    return h + len;
}

static void send_text(client *c, const char *data, size_t len) {
    unsigned char buf[70000];
    put(c, buf, frame(buf, data, len));
}

static void epoll_out(client *c, int on) {
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->epollout = on;
}

static void drop(client *c) {
    if (!c->open) return;
    c->open = 0;
    close(c->fd);
    for (client **p = &dashboards; *p; p = &(*p)->next_dash)
        if (*p == c) {
            *p = c->next_dash;
            break;
        }
}

static void flush(client *c) {
    while (c->open && c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w > 0) {
            c->out_off += (size_t)w;
        } else if (w < 0 && errno == EAGAIN) {
            if (!c->epollout) epoll_out(c, 1);
            return;
        } else if (!(w < 0 && errno == EINTR)) {
            drop(c);
            return;
        }
    }
    c->out_off = c->out_len = 0;
    if (c->epollout && c->open) epoll_out(c, 0);
}

static int handshake(client *c) {
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end) return 0;
    *end = 0;
    char *key = strcasestr(c->in, "\nSec-WebSocket-Key:");
    char *auth = strcasestr(c->in, "\nAuthorization: Bearer ");
    int who = -1;
    if (auth) {
        auth += 23;
        size_t n = strcspn(auth, "\r\n");
        for (int i = 0; i < n_secrets; i++)
            if (strlen(secrets[i]) == n && !memcmp(secrets[i], auth, n)) who = i;
    }
    if (!key || who < 0) {
        const char *no = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n";
        put(c, no, strlen(no));
        flush(c);
        drop(c);
        return -1;
    }
    key += 19;
    while (*key == ' ') key++;
    char material[128];
    int kl = (int)strcspn(key, "\r\n ");
    snprintf(material, sizeof material, "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", kl, key);
    unsigned char digest[20], accept[64];
    SHA1((unsigned char *)material, strlen(material), digest);
    EVP_EncodeBlock(accept, digest, 20);
    char resp[256];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    put(c, resp, (size_t)n);
    size_t hl = (size_t)(end - c->in) + 4;
    memmove(c->in, c->in + hl, c->in_len - hl);
    c->in_len -= hl;
    c->open = 2;
    snprintf(c->name, sizeof c->name, "%s", names[who]);
    c->dashboard = roles[who];
    char welcome[512];
    n = snprintf(welcome, sizeof welcome,
                 "{\"type\":\"welcome\",\"payload\":{\"name\":\"%s\",\"role\":\"%s\","
                 "\"connection\":\"%p\",\"server\":\"firehose\",\"protocol\":1,\"seq\":%ld,"
                 "\"heartbeat\":20%s}}",
                 c->name, c->dashboard ? "dashboard" : "agent", (void *)c, seq,
                 c->dashboard ? ",\"snapshot\":{\"agents\":{},\"questions\":[],\"tasks\":{}}" : "");
    send_text(c, welcome, (size_t)n);
    if (c->dashboard) {
        c->next_dash = dashboards;
        dashboards = c;
    }
    return 1;
}

static char timestamp[32];

static void relay(client *agent, const char *msg, size_t len) {
    const char *id = memmem(msg, len, "\"id\":\"", 6);
    const char *payload = memmem(msg, len, "\"payload\":", 10);
    if (!id || !payload) return; /* acks from dashboards and the like */
    id += 6;
    int idl = (int)((const char *)memchr(id, '"', len - (size_t)(id - msg)) - id);
    size_t pl = len - (size_t)(payload - msg) - 11; /* the payload object, without the final } */
    seq++;
    char buf[70000];
    int n = snprintf(buf, sizeof buf, "{\"type\":\"ack\",\"id\":\"%.*s\",\"seq\":%ld}", idl, id, seq);
    send_text(agent, buf, (size_t)n);
    n = snprintf(buf, sizeof buf,
                 "{\"type\":\"agent_status\",\"id\":\"%.*s\",\"timestamp\":\"%s\",\"from\":\"%s\","
                 "\"seq\":%ld,\"payload\":%.*s}",
                 idl, id, timestamp, agent->name, seq, (int)pl, payload + 10);
    unsigned char framed[70010];
    size_t fl = frame(framed, buf, (size_t)n);
    for (client *d = dashboards; d; d = d->next_dash) put(d, framed, fl);
}

static void frames(client *c) {
    size_t off = 0;
    for (;;) {
        unsigned char *p = (unsigned char *)c->in + off;
        size_t avail = c->in_len - off;
        if (avail < 2) break;
        uint64_t len = p[1] & 0x7f;
        size_t h = 2;
        if (len == 126) {
            if (avail < 4) break;
            len = ((uint64_t)p[2] << 8) | p[3];
            h = 4;
        } else if (len == 127) {
            drop(c);
            return;
        }
        if (!(p[1] & 0x80)) {
            drop(c);
            return;
        }
        if (avail < h + 4 + len) break;
        unsigned char *mask = p + h, *data = p + h + 4;
        for (uint64_t i = 0; i < len; i++) data[i] ^= mask[i & 3];
        int opcode = p[0] & 0x0f;
        if (opcode == 1 && !c->dashboard) relay(c, (char *)data, (size_t)len);
        if (opcode == 8) {
            drop(c);
            return;
        }
        off += h + 4 + len;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
}

static void readable(client *c) {
    for (;;) {
        if (c->in_cap - c->in_len < 65536) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 131072;
            c->in = xrealloc(c->in, c->in_cap);
        }
        ssize_t r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len - 1);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            drop(c);
            return;
        }
        if (r < 0) return;
        c->in_len += (size_t)r;
        if (c->open == 1 && handshake(c) <= 0) return;
        frames(c);
        if (!c->open) return;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: firehose PORT SECRETS_FILE\n");
        return 2;
    }
    FILE *f = fopen(argv[2], "r");
    if (!f) {
        perror(argv[2]);
        return 2;
    }
    char line[512], role[32];
    while (n_secrets < 256 && fgets(line, sizeof line, f))
        if (sscanf(line, "%63s %31s %255s", names[n_secrets], role, secrets[n_secrets]) == 3)
            roles[n_secrets++] = !strcmp(role, "dashboard");
    fclose(f);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 4096) < 0) {
        perror("bind/listen");
        return 2;
    }
    ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev);
    printf("firehose listening on 127.0.0.1:%s\n", argv[1]);
    fflush(stdout);
    static struct epoll_event evs[1024];
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, -1);
        time_t now = time(NULL);
        strftime(timestamp, sizeof timestamp, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
        for (int i = 0; i < n; i++) {
            client *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    client *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    nc->open = 1;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (!c->open) continue;
            if (evs[i].events & EPOLLOUT) flush(c);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) readable(c);
        }
        for (size_t i = 0; i < n_dirty; i++) {
            dirty[i]->dirty = 0;
            if (dirty[i]->open) flush(dirty[i]);
        }
        n_dirty = 0;
    }
}
