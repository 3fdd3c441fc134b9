/*
 * fuzz_proto_submit.c - libFuzzer target for the submission protocol's
 * decoders (proto/submit.c), as the queue reads BEGIN and the smtp
 * process reads the answers.
 *
 *   make build/fuzz/fuzz_proto_submit
 *   ./build/fuzz/fuzz_proto_submit tests/fuzz/corpus/fuzz_proto_submit -max_total_time=60
 *
 * Input: one octet (the recipient bound, 1..256), then a payload given to
 * every decoder. Checks, besides ASan/UBSan:
 * - an accepted BEGIN has no queue id, at most the bound of recipients,
 *   and encodes again to a payload that decodes to the same text;
 * - an accepted queue id is 16 hex digits, as sent;
 * - an accepted reply is a 4xx/5xx line of printable ASCII, as sent.
 */
#include <string.h>

#include <event2/buffer.h>

#include "fuzz.h"
#include "lib/log.h"
#include "lib/util.h"
#include "mail/envelope.h"
#include "proto/submit.h"

static void
check_begin(const uint8_t *p, size_t n, size_t max_rcpts)
{
	struct envelope env, again;
	struct evbuffer *a = evbuffer_new(), *b = evbuffer_new(), *c;
	char err[256];

	envelope_init(&env);
	if (submit_begin_decode(p, n, max_rcpts, &env, err, sizeof(err)) == -1) {
		CHECK(err[0] != '\0');
		CHECK(env.rcpts == NULL && env.sender == NULL);
		evbuffer_free(a);
		evbuffer_free(b);
		return;
	}
	CHECK(env.id[0] == '\0' && env.nrcpts <= max_rcpts);
	CHECK(submit_begin_encode(a, &env) == 0);
	envelope_init(&again);
	CHECK(submit_begin_decode(evbuffer_pullup(a, -1), evbuffer_get_length(a),
	    max_rcpts, &again, err, sizeof(err)) == 0);
	c = evbuffer_new();
	envelope_serialize(&again, c);
	envelope_serialize(&env, b);
	CHECK(evbuffer_get_length(b) == evbuffer_get_length(c));
	CHECK(memcmp(evbuffer_pullup(b, -1), evbuffer_pullup(c, -1),
	    evbuffer_get_length(b)) == 0);
	envelope_clear(&env);
	envelope_clear(&again);
	evbuffer_free(a);
	evbuffer_free(b);
	evbuffer_free(c);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char id[QUEUE_ID_LEN + 1], reply[SUBMIT_REPLY_MAX];

	if (size < 1)
		return 0;
	log_set_level(LOG_LEVEL_ERR);
	check_begin(data + 1, size - 1, (size_t)data[0] + 1);
	if (submit_qid_decode(data + 1, size - 1, id) == 0) {
		CHECK(strlen(id) == QUEUE_ID_LEN);
		CHECK(memcmp(id, data + 1, QUEUE_ID_LEN) == 0);
		for (size_t i = 0; i < QUEUE_ID_LEN; i++)
			CHECK(strchr("0123456789abcdefABCDEF", id[i]) != NULL);
	}
	if (submit_reply_decode(data + 1, size - 1, reply) == 0) {
		size_t n = strlen(reply);

		CHECK(n == size - 1 && n >= 4 && n < SUBMIT_REPLY_MAX);
		CHECK(reply[0] == '4' || reply[0] == '5');
		for (size_t i = 0; i < n; i++)
			CHECK(reply[i] >= 32 && reply[i] <= 126);
	}
	return 0;
}
