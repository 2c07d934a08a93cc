/*
 * tcp_echo: a TCP echo server for one client, reading slowly so that its
 * receive queue is never empty while the client keeps sending.
 *
 * usage: tcp_echo ADDR [PORT=0] [CHUNK=64] [DELAY_MS=10] [raw]
 *
 * Listens on ADDR:PORT (IPv4 or IPv6 literal), accepts one connection, then
 * reads at most CHUNK bytes every DELAY_MS and writes them back, forever.
 * The listening socket stays open. Any error on the connection (a reset, an
 * end of file, EINVAL from a socket left in repair mode) is a FAIL. With
 * "raw", a raw ICMP socket (a kind lazyr refuses) is opened after the
 * connection is accepted, so it comes after it in the fd table.
 *
 * Output:  listening port=<port> pid=<pid>
 *          accepted fd=<fd> listener=<fd>
 *          raw fd=<fd>                            (with "raw")
 *          tick <n> echoed=<bytes> pid=<pid>      (every 20 reads)
 */
#include "victim.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			fail("write: %s", strerror(errno));
		}
		p += w;
		n -= (size_t)w;
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t sl;
	long port = arg_long(argc, argv, 2, 0);
	long chunk = arg_long(argc, argv, 3, 64);
	long delay = arg_long(argc, argv, 4, 10);
	int lis, c;

	if (argc < 2 || chunk < 1 || chunk > 65536) {
		say("usage: tcp_echo ADDR [PORT] [CHUNK] [DELAY_MS]");
		return 2;
	}
	if (strchr(argv[1], ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, argv[1], &a->sin6_addr) != 1)
			fail("bad address %s", argv[1]);
		sl = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, argv[1], &a->sin_addr) != 1)
			fail("bad address %s", argv[1]);
		sl = sizeof(*a);
	}
	lis = socket(ss.ss_family, SOCK_STREAM, 0);
	if (lis < 0)
		fail("socket: %s", strerror(errno));
	if (bind(lis, (struct sockaddr *)&ss, sl) < 0)
		fail("bind: %s", strerror(errno));
	if (listen(lis, 4) < 0)
		fail("listen: %s", strerror(errno));
	sl = sizeof(ss);
	if (getsockname(lis, (struct sockaddr *)&ss, &sl) < 0)
		fail("getsockname: %s", strerror(errno));
	port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					      : ((struct sockaddr_in6 *)&ss)->sin6_port);
	say("listening port=%ld pid=%d", port, getpid());

	while ((c = accept(lis, NULL, NULL)) < 0)
		if (errno != EINTR)
			fail("accept: %s", strerror(errno));
	say("accepted fd=%d listener=%d", c, lis);
	if (argc > 5 && strcmp(argv[5], "raw") == 0) {
		int raw = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);

		if (raw < 0)
			fail("raw socket: %s", strerror(errno));
		say("raw fd=%d", raw);
	}

	char *buf = malloc((size_t)chunk);
	unsigned long long echoed = 0;

	if (!buf)
		fail("malloc");
	for (unsigned long n = 0, reads = 0;; reads++) {
		ssize_t r = read(c, buf, (size_t)chunk);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			fail("read: %s", strerror(errno));
		}
		if (r == 0)
			fail("read: end of file from the client");
		write_all(c, buf, (size_t)r);
		echoed += (unsigned long long)r;
		if (reads % 20 == 0)
			say("tick %lu echoed=%llu pid=%d", n++, echoed, getpid());
		sleep_ms(delay);
	}
}
