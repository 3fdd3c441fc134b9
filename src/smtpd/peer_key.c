/*
 * peer_key.c - per-client keys for connection and AUTH limits (see
 * peer_key.h).
 */
#include <arpa/inet.h>
#include <string.h>

#include "smtpd/peer_key.h"

void
peer_key_make(const char *addr, unsigned v6_prefix, uint8_t key[PEER_KEY_LEN])
{
	struct in6_addr a6;
	struct in_addr a4;

	memset(key, 0, PEER_KEY_LEN);
	if (inet_pton(AF_INET, addr, &a4) == 1) {
		key[0] = 4;
		memcpy(key + 1, &a4, 4);
	} else if (inet_pton(AF_INET6, addr, &a6) == 1) {
		if (IN6_IS_ADDR_V4MAPPED(&a6)) {
			/* an IPv4 client on a dual-stack socket: by address,
			 * or every IPv4 client would share ::ffff:0:0/96 */
			key[0] = 4;
			memcpy(key + 1, a6.s6_addr + 12, 4);
			return;
		}
		unsigned bits = v6_prefix > 128 ? 128 : v6_prefix;

		key[0] = 6;
		memcpy(key + 1, a6.s6_addr, bits / 8);
		if (bits % 8 != 0)
			key[1 + bits / 8] = (uint8_t)(a6.s6_addr[bits / 8] &
			    (0xff00u >> (bits % 8)));
	} else {
		key[0] = 0xff;
		memcpy(key + 1, addr, strnlen(addr, PEER_KEY_LEN - 1));
	}
}
