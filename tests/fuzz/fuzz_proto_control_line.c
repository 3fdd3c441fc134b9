/*
 * fuzz_proto_control_line.c - libFuzzer target for the request line of
 * the queue's control socket (proto/control_line.c), as the queue
 * process reads it from any local client root or the queue user runs.
 *
 *   make build/fuzz/fuzz_proto_control_line
 *   ./build/fuzz/fuzz_proto_control_line tests/fuzz/corpus/fuzz_proto_control_line -max_total_time=60
 *
 * Checks, besides ASan/UBSan: a refusal says why; an accepted line is
 * within the bound, its id is empty or 16 lower-case hex digits, and it
 * formats to a line that parses to the same request.
 */
#include <string.h>

#include "fuzz.h"
#include "proto/control_line.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct control_line req, again;
	char line[CONTROL_LINE_MAX + 1];
	const char *why = NULL;
	int n;

	if (control_line_parse((const char *)data, size, &req, &why) == -1) {
		CHECK(why != NULL && why[0] != '\0');
		return 0;
	}
	CHECK(size < CONTROL_LINE_MAX + 1);
	n = (int)strlen(req.id);
	CHECK(n == 0 || n == QUEUE_ID_LEN);
	for (int i = 0; i < n; i++)
		CHECK(strchr("0123456789abcdef", req.id[i]) != NULL);
	n = control_line_format(&req, line, sizeof(line));
	CHECK(n > 0 && n <= CONTROL_LINE_MAX && line[n - 1] == '\n');
	CHECK(control_line_parse(line, (size_t)n - 1, &again, &why) == 0);
	CHECK(again.verb == req.verb && strcmp(again.id, req.id) == 0);
	return 0;
}
