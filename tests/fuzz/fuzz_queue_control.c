/*
 * fuzz_queue_control.c - libFuzzer target for the control socket of
 * `tern queue` (queue_control.c): the request line the queue process
 * reads from a client, and the JSON answer the client reads back.
 *
 *   make fuzz && ./build/fuzz/fuzz_queue_control tests/fuzz/corpus/fuzz_queue_control
 *
 * Input: one mode byte, then
 * - mode 0: a request line (proto/control_line.c, as the queue reads it);
 * - mode 1: a string for queue_control_json_str, read back through the
 *   client in an error answer;
 * - mode 2, 3: an answer document for the request named by the byte after
 *   the mode (its verb), printed as a table (2) or as JSON (3).
 * Checks, besides ASan/UBSan:
 * - an accepted request names a verb and an id of 16 lower-case hex
 *   digits (or none), and the line the client would send for it parses
 *   to the same request;
 * - a string escaped by the server reads back unchanged, as the
 *   client's error line, unless it was not UTF-8;
 * - any answer prints without a crash and returns 0 or 1.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "proto/control_line.h"
#include "queue/queue_control.h"

#include "fuzz.h"

/* The verbs a request line can name: CONTROL_LINE_LIST .. _RELEASE. */
#define NVERBS ((unsigned)CONTROL_LINE_RELEASE + 1)

static void
fuzz_request(const char *p, size_t len)
{
	struct control_line req, req2;
	const char *why = NULL;
	char line[CONTROL_LINE_MAX + 1];
	int n;

	if (control_line_parse(p, len, &req, &why) == -1) {
		CHECK(why != NULL && why[0] != '\0');
		return;
	}
	CHECK((unsigned)req.verb < NVERBS);
	CHECK(req.id[0] == '\0' || strlen(req.id) == QUEUE_ID_LEN);
	for (size_t i = 0; req.id[i] != '\0'; i++)
		CHECK((req.id[i] >= '0' && req.id[i] <= '9') ||
		    (req.id[i] >= 'a' && req.id[i] <= 'f'));
	/* what queue_control_client sends for it parses to the same */
	n = control_line_format(&req, line, sizeof(line));
	CHECK(n > 1 && line[n - 1] == '\n');
	CHECK(control_line_parse(line, (size_t)n - 1, &req2, &why) == 0);
	CHECK(req2.verb == req.verb && strcmp(req2.id, req.id) == 0);
}

static void
fuzz_json_str(const char *p, size_t len)
{
	char *s = strndup(p, len);   /* up to a NUL, as a C string */
	struct evbuffer *doc = evbuffer_new(), *want = evbuffer_new();
	struct control_line req = { .verb = CONTROL_LINE_LIST };
	char *got = NULL;
	size_t gotlen = 0;
	FILE *err = open_memstream(&got, &gotlen);

	CHECK(s != NULL && doc != NULL && want != NULL && err != NULL);
	evbuffer_add_printf(doc, "{\"ok\":false,\"error\":");
	queue_control_json_str(doc, s);
	evbuffer_add_printf(doc, "}\n");
	CHECK(queue_control_answer((const char *)evbuffer_pullup(doc, -1),
	    evbuffer_get_length(doc), &req, false, stdout, err) == 1);
	fclose(err);
	/* the client's line: the string itself, unless the server replaced
	 * invalid UTF-8 (a \ufffd escape in the document) */
	evbuffer_add_printf(want, "tern queue: %s\n", s);
	if (memmem(evbuffer_pullup(doc, -1), evbuffer_get_length(doc),
	    "\\ufffd", 6) == NULL) {
		CHECK(gotlen == evbuffer_get_length(want));
		CHECK(memcmp(got, evbuffer_pullup(want, -1), gotlen) == 0);
	} else {
		CHECK(gotlen >= 13 && memcmp(got, "tern queue: ", 12) == 0);
	}
	free(got);
	free(s);
	evbuffer_free(doc);
	evbuffer_free(want);
}

static void
fuzz_answer(const char *p, size_t len, bool json)
{
	static FILE *null;
	struct control_line req = { .id = "0123456789abcdef" };
	int rc;

	if (null == NULL)
		null = fopen("/dev/null", "w");
	CHECK(null != NULL);
	if (len == 0)
		return;
	req.verb = (enum control_line_verb)((unsigned char)p[0] %
	    NVERBS);
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
