/*
 * control_line.c - the control socket's request line (see control_line.h).
 */
#include "lib/util.h"
#include "proto/control_line.h"

static const struct {
	const char *name;
	enum control_line_verb verb;
	int id;            /* 0: none, 1: required, 2: optional */
} verbs[] = {
	{ "list", CONTROL_LINE_LIST, 0 },
	{ "show", CONTROL_LINE_SHOW, 1 },
	{ "flush", CONTROL_LINE_FLUSH, 2 },
	{ "delete", CONTROL_LINE_DELETE, 1 },
	{ "hold", CONTROL_LINE_HOLD, 1 },
	{ "release", CONTROL_LINE_RELEASE, 1 },
};

int
control_line_parse(const char *p, size_t len, struct control_line *req,
    const char **why)
{
	const char *sp, *arg = NULL;
	size_t vlen, alen = 0;

	memset(req, 0, sizeof(*req));
	if (len > 0 && p[len - 1] == '\r')
		len--;
	if (len + 1 > CONTROL_LINE_MAX) {
		*why = "request line too long";
		return -1;
	}
	if (len == 0) {
		*why = "empty request";
		return -1;
	}
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)p[i] <= 0x20 && p[i] != ' ') {
			*why = "control character in request";
			return -1;
		} else if ((unsigned char)p[i] >= 0x7f) {
			*why = "non-ASCII request";
			return -1;
		}
	sp = memchr(p, ' ', len);
	vlen = sp != NULL ? (size_t)(sp - p) : len;
	if (sp != NULL) {
		arg = sp + 1;
		alen = len - vlen - 1;
		if (alen == 0 || memchr(arg, ' ', alen) != NULL) {
			*why = "expected: VERB [ID] with single spaces";
			return -1;
		}
	}
	for (size_t v = 0; v < nitems(verbs); v++) {
		if (strlen(verbs[v].name) != vlen ||
		    memcmp(verbs[v].name, p, vlen) != 0)
			continue;
		req->verb = verbs[v].verb;
		if (arg == NULL) {
			if (verbs[v].id == 1) {
				*why = "this request needs a queue id";
				return -1;
			}
			return 0;
		}
		if (verbs[v].id == 0) {
			*why = "this request takes no argument";
			return -1;
		}
		if (alen != QUEUE_ID_LEN) {
			*why = "bad queue id (16 hex digits)";
			return -1;
		}
		for (size_t i = 0; i < alen; i++) {
			char c = arg[i];

			if (c >= 'A' && c <= 'F')
				c = (char)(c - 'A' + 'a');
			if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
				*why = "bad queue id (16 hex digits)";
				return -1;
			}
			req->id[i] = c;
		}
		req->id[QUEUE_ID_LEN] = '\0';
		return 0;
	}
	*why = "unknown request (list, show, flush, delete, hold, release)";
	return -1;
}

int
control_line_format(const struct control_line *req, char *buf, size_t size)
{
	int n;

	for (size_t v = 0; v < nitems(verbs); v++) {
		if (verbs[v].verb != req->verb)
			continue;
		n = snprintf(buf, size, "%s%s%s\n", verbs[v].name,
		    req->id[0] ? " " : "", req->id);
		return n < 0 || (size_t)n >= size ? -1 : n;
	}
	return -1;
}
