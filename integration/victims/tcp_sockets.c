/*
 * tcp_sockets: listening TCP sockets and UDP sockets with options, served
 * from one loop; every socket option it set is checked again every tick.
 *
 * usage: tcp_sockets UDP_PEER_PORT
 *
 * Sockets (all on loopback):
 *   lis4  TCP listener 127.0.0.1, O_NONBLOCK, SO_KEEPALIVE, TCP_NODELAY,
 *         SO_REUSEADDR, SO_LINGER 7 s; every accepted connection gets one
 *         line echoed as "tcp4 <line>" and is closed
 *   lis6  TCP listener [::1], IPV6_V6ONLY, O_NONBLOCK; echoes "tcp6 <line>"
 *   udp   UDP bound to 127.0.0.1, O_NONBLOCK, SO_RCVBUF 96 KiB, IP_TOS 0x10
 *         then SO_PRIORITY 5; answers every datagram with "udp <datagram>"
 *   cudp  UDP connected to 127.0.0.1:UDP_PEER_PORT (port chosen by the
 *         kernel at connect), SO_RCVTIMEO 1.25 s; sends "ping <n> pid=<pid>"
 *         every tick
 *
 * Output:  ready tcp4=<port> tcp6=<port> udp=<port> cudp=<port> pid=<pid>
 *          tick <n> pid=<pid>            (every 50 ms)
 */
#include "victim.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int lis4, lis6, udp, cudp;

static int port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		fail("getsockname: %s", strerror(errno));
	return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					     : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

static int getint(int fd, int level, int opt)
{
	int v = 0;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, level, opt, &v, &l) < 0)
		fail("getsockopt %d/%d: %s", level, opt, strerror(errno));
	return v;
}

static void setint(int fd, int level, int opt, int v)
{
	if (setsockopt(fd, level, opt, &v, sizeof(v)) < 0)
		fail("setsockopt %d/%d: %s", level, opt, strerror(errno));
}

static int udp_rcvbuf; /* as the kernel reports it after setting */
static struct timeval cudp_tmo; /* likewise (the kernel rounds to its clock ticks) */

/* check verifies every option and flag this program set. */
static void check(void)
{
	if (!(fcntl(lis4, F_GETFL) & O_NONBLOCK) || !(fcntl(lis6, F_GETFL) & O_NONBLOCK) ||
	    !(fcntl(udp, F_GETFL) & O_NONBLOCK))
		fail("O_NONBLOCK lost");
	if (fcntl(cudp, F_GETFL) & O_NONBLOCK)
		fail("cudp became non-blocking");
	if (!getint(lis4, SOL_SOCKET, SO_KEEPALIVE))
		fail("lis4 SO_KEEPALIVE lost");
	if (!getint(lis4, IPPROTO_TCP, TCP_NODELAY))
		fail("lis4 TCP_NODELAY lost");
	if (!getint(lis4, SOL_SOCKET, SO_REUSEADDR))
		fail("lis4 SO_REUSEADDR lost");
	if (getint(lis6, SOL_SOCKET, SO_REUSEADDR))
		fail("lis6 SO_REUSEADDR appeared");
	if (!getint(lis6, IPPROTO_IPV6, IPV6_V6ONLY))
		fail("lis6 IPV6_V6ONLY lost");
	if (getint(lis4, SOL_SOCKET, SO_ACCEPTCONN) != 1 || getint(lis6, SOL_SOCKET, SO_ACCEPTCONN) != 1)
		fail("a listener does not listen");
	if (getint(udp, SOL_SOCKET, SO_RCVBUF) != udp_rcvbuf)
		fail("udp SO_RCVBUF %d, want %d", getint(udp, SOL_SOCKET, SO_RCVBUF), udp_rcvbuf);
	if (getint(udp, IPPROTO_IP, IP_TOS) != 0x10)
		fail("udp IP_TOS %#x, want 0x10", getint(udp, IPPROTO_IP, IP_TOS));
	if (getint(udp, SOL_SOCKET, SO_PRIORITY) != 5)
		fail("udp SO_PRIORITY %d, want 5", getint(udp, SOL_SOCKET, SO_PRIORITY));

	struct linger lg;
	socklen_t ll = sizeof(lg);
	if (getsockopt(lis4, SOL_SOCKET, SO_LINGER, &lg, &ll) < 0 || !lg.l_onoff || lg.l_linger != 7)
		fail("lis4 SO_LINGER %d/%d, want on/7", lg.l_onoff, lg.l_linger);

	struct timeval tv;
	socklen_t tl = sizeof(tv);
	if (getsockopt(cudp, SOL_SOCKET, SO_RCVTIMEO, &tv, &tl) < 0 || tv.tv_sec != cudp_tmo.tv_sec ||
	    tv.tv_usec != cudp_tmo.tv_usec)
		fail("cudp SO_RCVTIMEO %ld.%06ld, want %ld.%06ld", (long)tv.tv_sec, (long)tv.tv_usec,
		     (long)cudp_tmo.tv_sec, (long)cudp_tmo.tv_usec);
}

static void serve_tcp(int lis, const char *tag)
{
	char line[256];
	int c = accept(lis, NULL, NULL);
	size_t got = 0;

	if (c < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		fail("accept %s: %s", tag, strerror(errno));
	}
	/* The accepted socket inherits nothing of O_NONBLOCK: a blocking read of one line. */
	while (got < sizeof(line) - 1) {
		ssize_t r = read(c, line + got, 1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (line[got++] == '\n')
			break;
	}
	line[got] = 0;
	dprintf(c, "%s %s", tag, line);
	close(c);
}

static void serve_udp(void)
{
	char buf[512], out[600];
	struct sockaddr_storage from;
	socklen_t fl = sizeof(from);
	ssize_t r = recvfrom(udp, buf, sizeof(buf) - 1, 0, (struct sockaddr *)&from, &fl);

	if (r < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		fail("recvfrom: %s", strerror(errno));
	}
	buf[r] = 0;
	int n = snprintf(out, sizeof(out), "udp %s", buf);
	if (sendto(udp, out, (size_t)n, 0, (struct sockaddr *)&from, fl) < 0)
		fail("sendto: %s", strerror(errno));
}

int main(int argc, char **argv)
{
	long peer = arg_long(argc, argv, 1, 0);
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };

	if (peer <= 0 || peer > 65535) {
		say("usage: tcp_sockets UDP_PEER_PORT");
		return 2;
	}

	lis4 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	setint(lis4, SOL_SOCKET, SO_REUSEADDR, 1);
	setint(lis4, SOL_SOCKET, SO_KEEPALIVE, 1);
	setint(lis4, IPPROTO_TCP, TCP_NODELAY, 1);
	struct linger lg = { 1, 7 };
	if (setsockopt(lis4, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
		fail("SO_LINGER: %s", strerror(errno));
	if (bind(lis4, (struct sockaddr *)&a4, sizeof(a4)) < 0 || listen(lis4, 8) < 0)
		fail("lis4: %s", strerror(errno));

	lis6 = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
	setint(lis6, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	if (bind(lis6, (struct sockaddr *)&a6, sizeof(a6)) < 0 || listen(lis6, 8) < 0)
		fail("lis6: %s", strerror(errno));

	udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	setint(udp, SOL_SOCKET, SO_RCVBUF, 48 * 1024);
	udp_rcvbuf = getint(udp, SOL_SOCKET, SO_RCVBUF);
	setint(udp, IPPROTO_IP, IP_TOS, 0x10);
	setint(udp, SOL_SOCKET, SO_PRIORITY, 5);
	if (bind(udp, (struct sockaddr *)&a4, sizeof(a4)) < 0)
		fail("udp bind: %s", strerror(errno));

	struct sockaddr_in pa = a4;
	pa.sin_port = htons((uint16_t)peer);
	cudp = socket(AF_INET, SOCK_DGRAM, 0);
	if (connect(cudp, (struct sockaddr *)&pa, sizeof(pa)) < 0)
		fail("cudp connect: %s", strerror(errno));
	struct timeval tv = { 1, 250000 };
	if (setsockopt(cudp, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		fail("SO_RCVTIMEO: %s", strerror(errno));
	socklen_t tl = sizeof(cudp_tmo);
	if (getsockopt(cudp, SOL_SOCKET, SO_RCVTIMEO, &cudp_tmo, &tl) < 0)
		fail("SO_RCVTIMEO: %s", strerror(errno));

	check();
	say("ready tcp4=%d tcp6=%d udp=%d cudp=%d pid=%d", port_of(lis4), port_of(lis6), port_of(udp),
	    port_of(cudp), getpid());
	for (unsigned long n = 0;; n++) {
		char ping[64];
		int len;

		serve_tcp(lis4, "tcp4");
		serve_tcp(lis6, "tcp6");
		serve_udp();
		len = snprintf(ping, sizeof(ping), "ping %lu pid=%d", n, getpid());
		/* The peer may not listen (yet): ECONNREFUSED from an earlier ICMP is not an error. */
		if (send(cudp, ping, (size_t)len, 0) < 0 && errno != ECONNREFUSED && errno != EINTR)
			fail("cudp send: %s", strerror(errno));
		check();
		say("tick %lu pid=%d", n, getpid());
		sleep_ms(50);
	}
}
