/*
 * socket: holds an fd of a kind lazyr does not checkpoint (a UDP socket, or
 * an eventfd), which lazyr must refuse naming the fd. After the refused dump
 * it must keep running exactly as before.
 *
 * usage: socket [udp|eventfd]
 *
 * Output:  socket kind=<kind> fd=<fd> pid=<pid>
 *          tick <n> pid=<pid>     (every 100 ms)
 */
#include "victim.h"

#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	const char *kind = argc > 1 ? argv[1] : "udp";
	int fd;

	if (strcmp(kind, "udp") == 0) {
		struct sockaddr_in sa = { .sin_family = AF_INET,
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

		fd = socket(AF_INET, SOCK_DGRAM, 0);
		if (fd < 0)
			fail("socket: %s", strerror(errno));
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			fail("bind: %s", strerror(errno));
	} else if (strcmp(kind, "netlink") == 0) {
		fd = socket(AF_NETLINK, SOCK_RAW, 0 /* NETLINK_ROUTE */);
		if (fd < 0)
			fail("socket: %s", strerror(errno));
	} else if (strcmp(kind, "eventfd") == 0) {
		fd = eventfd(5, 0);
		if (fd < 0)
			fail("eventfd: %s", strerror(errno));
	} else {
		say("usage: socket [udp|netlink|eventfd]");
		return 2;
	}
	say("socket kind=%s fd=%d pid=%d", kind, fd, getpid());
	for (unsigned long n = 0;; n++) {
		say("tick %lu pid=%d", n, getpid());
		sleep_ms(100);
	}
}
