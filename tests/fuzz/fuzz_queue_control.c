/*
 * fuzz_queue_control.c - libFuzzer target for the control socket of
 * `tern queue` (queue_control.c): the request line the queue process
 * reads from a client, and the JSON answer the client reads back.
 *
 *   make fuzz && ./build/fuzz/fuzz_queue_control tests/fuzz/corpus/fuzz_queue_control
 *
 * Input: one mode byte, then
 * - mode 0: a request line (queue_control_parse);
 * - mode 1: a string for queue_control_json_str, read back through the
 *   client in an error answer;
 * - mode 2, 3: an answer document for the request named by the byte after
 *   the mode (its verb), printed as a table (2) or as JSON (3).
 * Checks, besides ASan/UBSan:
 * - an accepted request names a verb and an id of 16 lower-case hex
 *   digits (or none), and the line the client would send for it parses
 *   to the same request;
 * - a string escaped by the server reads back unchanged when it is
 *   UTF-8 (else with U+FFFD), as the client's error line;
 * - any answer prints without a crash and returns 0 or 1.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "queue/queue_control.h"

#define CHECK(e)                                                               \
	do {                                                                   \
		if (!(e))                                                      \
			abort();                                               \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const verb_names[] = { "list", "show", "flush", "delete",
	"hold", "release" };

static void
fuzz_request(const char *p, size_t len)
{
	struct queue_control_req req, req2;
	const char *why = NULL;
	char line[QUEUE_CONTROL_LINE_MAX + 1];
	int n;

	if (queue_control_parse(p, len, &req, &why) == -1) {
		CHECK(why != NULL && why[0] != '\0');
		return;
	}
	CHECK((unsigned)req.verb < sizeof(verb_names) / sizeof(verb_names[0]));
	CHECK(req.id[0] == '\0' || strlen(req.id) == QUEUE_ID_LEN);
	for (size_t i = 0; req.id[i] != '\0'; i++)
		CHECK((req.id[i] >= '0' && req.id[i] <= '9') ||
		    (req.id[i] >= 'a' && req.id[i] <= 'f'));
	/* what queue_control_client sends for it */
	n = snprintf(line, sizeof(line), "%s%s%s", verb_names[req.verb],
	    req.id[0] ? " " : "", req.id);
	CHECK(n > 0 && (size_t)n < sizeof(line));
	CHECK(queue_control_parse(line, (size_t)n, &req2, &why) == 0);
	CHECK(req2.verb == req.verb && strcmp(req2.id, req.id) == 0);
}

/* Length of the valid UTF-8 sequence at p (RFC 3629), 0 if none. */
static size_t
utf8_len(const unsigned char *p, size_t n)
{
	unsigned cp, need;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		need = 1, cp = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		need = 2, cp = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		need = 3, cp = p[0] & 0x07;
	else
		return 0;
	if (need >= n)
		return 0;
	for (unsigned i = 1; i <= need; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return need + 1;
}

static void
fuzz_json_str(const char *p, size_t len)
{
	char *s = strndup(p, len);   /* up to a NUL, as a C string */
	struct evbuffer *doc = evbuffer_new(), *want = evbuffer_new();
	struct queue_control_req req = { .verb = QUEUE_CONTROL_LIST };
	char *got = NULL;
	size_t gotlen = 0, n = strlen(s);
	FILE *err = open_memstream(&got, &gotlen);

	CHECK(s != NULL && doc != NULL && want != NULL && err != NULL);
	evbuffer_add_printf(doc, "{\"ok\":false,\"error\":");
	queue_control_json_str(doc, s);
	evbuffer_add_printf(doc, "}\n");
	CHECK(queue_control_answer((const char *)evbuffer_pullup(doc, -1),
	    evbuffer_get_length(doc), &req, false, stdout, err) == 1);
	fclose(err);
	/* the client's line: the string, invalid octets as U+FFFD */
	evbuffer_add_printf(want, "tern queue: ");
	for (size_t i = 0; i < n;) {
		size_t k = utf8_len((const unsigned char *)s + i, n - i);

		if (k == 0) {
			evbuffer_add(want, "\xef\xbf\xbd", 3);
			k = 1;
		} else {
			evbuffer_add(want, s + i, k);
		}
		i += k;
	}
	evbuffer_add(want, "\n", 1);
	CHECK(gotlen == evbuffer_get_length(want));
	CHECK(memcmp(got, evbuffer_pullup(want, -1), gotlen) == 0);
	free(got);
	free(s);
	evbuffer_free(doc);
	evbuffer_free(want);
}

static void
fuzz_answer(const char *p, size_t len, bool json)
{
	static FILE *null;
	struct queue_control_req req = { .id = "0123456789abcdef" };
	int rc;

	if (null == NULL)
		null = fopen("/dev/null", "w");
	CHECK(null != NULL);
	if (len == 0)
		return;
	req.verb = (enum queue_control_verb)((unsigned char)p[0] %
	    (sizeof(verb_names) / sizeof(verb_names[0])));
	rc = queue_control_answer(p + 1, len - 1, &req, json, null, null);
	CHECK(rc == 0 || rc == 1);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data + 1;

	if (size == 0)
		return 0;
	switch (data[0] & 3) {
	case 0:
		fuzz_request(p, size - 1);
		break;
	case 1:
		fuzz_json_str(p, size - 1);
		break;
	default:
		fuzz_answer(p, size - 1, (data[0] & 3) == 3);
		break;
	}
	return 0;
}
