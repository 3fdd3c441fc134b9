/*
 * peer_key.h - the key that tells SMTP clients apart for per-client
 * limits: connections per client (smtp_server.c) and AUTH failure
 * throttling (auth.c). An IPv4 address (also an IPv4-mapped IPv6 one)
 * counts alone; an IPv6 address counts by its network of
 * client_ipv6_prefix bits, since one host usually holds a whole /64 and
 * can take a fresh address for each connection.
 */
#ifndef TERN_PEER_KEY_H
#define TERN_PEER_KEY_H

#include <stdint.h>

#define PEER_KEY_LEN 17   /* family octet + 16 address octets */

/*
 * The key of the client whose address is addr (text, as inet_ntop()
 * writes it) into key: IPv4 by address, IPv6 by its first v6_prefix bits
 * (1..128). Text that is no address keys on its first 16 octets, so
 * every caller gets some key. Keys compare with memcmp().
 */
void peer_key_make(const char *addr, unsigned v6_prefix,
    uint8_t key[PEER_KEY_LEN]);

#endif
