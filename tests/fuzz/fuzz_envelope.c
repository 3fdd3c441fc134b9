/*
 * fuzz_envelope.c - libFuzzer target for the envelope's text form
 * (envelope.c): the bytes the smtp process sends in IPC BEGIN and the head
 * of every queue file.
 *
 *   make fuzz && ./build/fuzz/fuzz_envelope tests/fuzz/corpus/fuzz_envelope
 *
 * Input: the envelope text itself (seeds: docs/spool-format.md examples).
 * Checks, besides ASan/UBSan:
 * - a refused text leaves the envelope empty and says why, also into an
 *   error buffer too small for the reason;
 * - an accepted one has a sender, 1..FUZZ_MAX_RCPTS recipients, and no
 *   value with a control character;
 * - serialising it and parsing the result gives the same envelope, and
 *   serialising that gives the same octets (one canonical form).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "mail/envelope.h"

#include "fuzz.h"

#define FUZZ_MAX_RCPTS 64

static void
check_value(const char *s)
{
	if (s == NULL)
		return;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		CHECK(*p >= 0x20 && *p != 0x7f);
}

static void
check_same(const struct envelope *a, const struct envelope *b)
{
	CHECK(strcmp(a->id, b->id) == 0);
	CHECK(a->arrival == b->arrival);
	CHECK(fuzz_str_eq(a->sender, b->sender));
	CHECK(fuzz_str_eq(a->helo, b->helo));
	CHECK(fuzz_str_eq(a->client_addr, b->client_addr));
	CHECK(fuzz_str_eq(a->protocol, b->protocol));
	CHECK(a->body == b->body && a->smtputf8 == b->smtputf8);
	CHECK(a->ret == b->ret && fuzz_str_eq(a->envid, b->envid));
	CHECK(a->size_declared == b->size_declared);
	CHECK(a->nrcpts == b->nrcpts);
	for (size_t i = 0; i < a->nrcpts; i++) {
		CHECK(strcmp(a->rcpts[i].addr, b->rcpts[i].addr) == 0);
		CHECK(fuzz_str_eq(a->rcpts[i].orcpt, b->rcpts[i].orcpt));
		CHECK(a->rcpts[i].notify == b->rcpts[i].notify);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct envelope env, env2;
	struct evbuffer *t1, *t2;
	char err[128], tiny[4];
	size_t n1;

	envelope_init(&env);
	if (envelope_parse(&env, (const char *)data, size, FUZZ_MAX_RCPTS, err,
	    sizeof(err)) == -1) {
		CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
		CHECK(env.sender == NULL && env.rcpts == NULL && env.nrcpts == 0);
		CHECK(envelope_parse(&env, (const char *)data, size,
		    FUZZ_MAX_RCPTS, tiny, sizeof(tiny)) == -1);
		CHECK(memchr(tiny, '\0', sizeof(tiny)) != NULL);
		return 0;
	}
	CHECK(env.sender != NULL);
	CHECK(env.nrcpts >= 1 && env.nrcpts <= FUZZ_MAX_RCPTS);
	check_value(env.sender);
	check_value(env.helo);
	check_value(env.client_addr);
	check_value(env.protocol);
	check_value(env.envid);
	for (size_t i = 0; i < env.nrcpts; i++) {
		CHECK(env.rcpts[i].addr[0] != '\0');
		check_value(env.rcpts[i].addr);
		check_value(env.rcpts[i].orcpt);
	}

	t1 = evbuffer_new();
	t2 = evbuffer_new();
	envelope_serialize(&env, t1);
	n1 = evbuffer_get_length(t1);
	envelope_init(&env2);
	CHECK(envelope_parse(&env2, (const char *)evbuffer_pullup(t1, -1), n1,
	    FUZZ_MAX_RCPTS, err, sizeof(err)) == 0);
	check_same(&env, &env2);
	envelope_serialize(&env2, t2);
	CHECK(evbuffer_get_length(t2) == n1);
	CHECK(memcmp(evbuffer_pullup(t1, -1), evbuffer_pullup(t2, -1), n1) == 0);

	envelope_clear(&env);
	envelope_clear(&env2);
	evbuffer_free(t1);
	evbuffer_free(t2);
	return 0;
}
