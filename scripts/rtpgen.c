/* RTP load generator/sink for scripts/bench-media (runs inside one lab namespace).
 *
 * Streams G.711-like packets (172 bytes: 12-byte RTP header + 160 bytes of payload) every 20 ms
 * on each of its sockets towards a target, receives on the same sockets (symmetric RTP), and
 * prints JSON: packets sent, received, and one-way latency percentiles in microseconds
 * (CLOCK_MONOTONIC is one clock for every namespace of the machine). Written in C so that the
 * generator, not the relay under test, is never the bottleneck.
 *
 * usage: rtpgen LOCAL_ADDR SECONDS < lines of "LOCAL_PORT TARGET_ADDR TARGET_PORT"
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXS 4096
#define PKT 172

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: rtpgen LOCAL SECONDS < plan\n"); return 2; }
    int v6 = strchr(argv[1], ':') != NULL;
    double seconds = atof(argv[2]);
    int fds[MAXS];
    struct sockaddr_storage dst[MAXS];
    socklen_t dlen = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int n = 0, lport, tport;
    char taddr[128];
    int ep = epoll_create1(0);
    while (n < MAXS && scanf("%d %127s %d", &lport, taddr, &tport) == 3) {
        int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int buf = 1 << 20;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
        struct sockaddr_storage me = {0};
        memset(&dst[n], 0, sizeof dst[n]);
        if (v6) {
            struct sockaddr_in6 *a = (void *)&me, *d = (void *)&dst[n];
            a->sin6_family = d->sin6_family = AF_INET6;
            inet_pton(AF_INET6, argv[1], &a->sin6_addr);
            a->sin6_port = htons(lport);
            inet_pton(AF_INET6, taddr, &d->sin6_addr);
            d->sin6_port = htons(tport);
        } else {
            struct sockaddr_in *a = (void *)&me, *d = (void *)&dst[n];
            a->sin_family = d->sin_family = AF_INET;
            inet_pton(AF_INET, argv[1], &a->sin_addr);
            a->sin_port = htons(lport);
            inet_pton(AF_INET, taddr, &d->sin_addr);
            d->sin_port = htons(tport);
        }
        if (bind(fd, (void *)&me, dlen) < 0) { perror("bind"); return 1; }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = n};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        fds[n++] = fd;
    }
    size_t cap = (size_t)(n * 50 * (seconds + 1)) + 16;
    uint64_t *lat = malloc(cap * sizeof *lat);
    uint64_t sent = 0, received = 0, start = now_ns(), tick = 20000000ull;
    uint64_t stop_at = start + (uint64_t)(seconds * 1e9), end = stop_at + 500000000ull, next = start;
    unsigned char pkt[PKT] = {0x80, 0}, rbuf[2048];
    memset(pkt + 12, 0xff, PKT - 12);
    uint32_t seq = 0;
    struct epoll_event evs[256];
    for (;;) {
        uint64_t t = now_ns();
        if (t >= end) break;
        if (t >= next && t < stop_at) {
            seq++;
            for (int i = 0; i < n; i++) {
                uint64_t ts = now_ns();
                pkt[2] = seq >> 8; pkt[3] = seq;
                memcpy(pkt + 8, &i, 4);
                memcpy(pkt + 12, &ts, 8);
                if (sendto(fds[i], pkt, PKT, 0, (void *)&dst[i], dlen) == PKT) sent++;
            }
            next += tick;
            continue;
        }
        uint64_t until = next < end ? next : end;
        int wait_ms = until > t ? (int)((until - t) / 1000000ull) : 0;
        int k = epoll_wait(ep, evs, 256, wait_ms);
        for (int e = 0; e < k; e++) {
            int fd = fds[evs[e].data.u32];
            for (;;) {
                ssize_t r = recv(fd, rbuf, sizeof rbuf, 0);
                if (r < 0) break;
                if (r >= 20) {
                    uint64_t ts;
                    memcpy(&ts, rbuf + 12, 8);
                    if (received < cap) lat[received] = now_ns() - ts;
                    received++;
                }
            }
        }
    }
    size_t m = received < cap ? received : cap;
    qsort(lat, m, sizeof *lat, cmp);
    double p50 = m ? lat[m / 2] / 1000.0 : -1, p99 = m ? lat[(size_t)(m * 0.99)] / 1000.0 : -1;
    printf("{\"sent\": %llu, \"received\": %llu, \"p50_us\": %.1f, \"p99_us\": %.1f, \"streams\": %d}\n",
           (unsigned long long)sent, (unsigned long long)received, p50, p99, n);
    return 0;
}
