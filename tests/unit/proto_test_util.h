/*
 * proto_test_util.h - helpers shared by the channel and codec unit tests
 * (test_ipc.c, test_proto_*.c): an envelope to send, its text form to
 * compare two envelopes by, and a count of open descriptors to catch a
 * leak. Static functions: each tests/unit/test_*.c is built alone.
 */
#ifndef TERN_PROTO_TEST_UTIL_H
#define TERN_PROTO_TEST_UTIL_H

#include "unit.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "lib/util.h"
#include "mail/envelope.h"

/* The text form of env (a heap string). */
static inline char *
env_text(const struct envelope *env)
{
	struct evbuffer *b = evbuffer_new();
	size_t len;
	char *s;

	envelope_serialize(env, b);
	len = evbuffer_get_length(b);
	s = xmalloc(len + 1);
	evbuffer_remove(b, s, len);
	s[len] = '\0';
	evbuffer_free(b);
	return s;
}

/* An envelope with nrcpts recipients of about addr_len octets each. */
static inline void
env_fill(struct envelope *env, size_t nrcpts, size_t addr_len)
{
	char addr[ENVELOPE_MAX_FIELD];

	envelope_init(env);
	env->arrival = 1796000000;
	envelope_set(&env->sender, "alice@example.org");
	envelope_set(&env->helo, "client.example.org");
	envelope_set(&env->client_addr, "192.0.2.1");
	envelope_set(&env->protocol, "ESMTP");
	env->body = ENVELOPE_BODY_8BITMIME;
	envelope_set(&env->envid, "QQ+2Bxyz");
	for (size_t i = 0; i < nrcpts; i++) {
		size_t n = addr_len > 20 ? addr_len - 20 : 1;

		memset(addr, 'a', n);
		snprintf(addr + n, sizeof(addr) - n, "%zu@example.net", i);
		envelope_add_rcpt(env, addr, i % 2 ? "rfc822;x+40y" : NULL,
		    i % 3 ? ENVELOPE_NOTIFY_FAILURE : 0);
	}
}

/* Descriptors open in this process (below 1024). */
static inline int
open_fds(void)
{
	int n = 0;

	for (int fd = 0; fd < 1024; fd++)
		if (fcntl(fd, F_GETFD) != -1)
			n++;
	return n;
}

#endif
