/*
 * control_line.h - the request line of the queue's control socket, which
 * `tern queue ...` sends (queue/queue_control.h has the socket, the JSON
 * answers and the client). One line, at most CONTROL_LINE_MAX octets with
 * its LF (CRLF accepted):
 *
 *     list | show <id> | flush | flush <id> | delete <id> | hold <id> |
 *     release <id>
 *
 * Verbs are lower case; one space before the id; the id is QUEUE_ID_LEN
 * hex digits (upper case is folded). Pure functions.
 */
#ifndef TERN_CONTROL_LINE_H
#define TERN_CONTROL_LINE_H

#include <stddef.h>

#include "mail/envelope.h"

#define CONTROL_LINE_MAX 256

enum control_line_verb {
	CONTROL_LINE_LIST,
	CONTROL_LINE_SHOW,
	CONTROL_LINE_FLUSH,
	CONTROL_LINE_DELETE,
	CONTROL_LINE_HOLD,
	CONTROL_LINE_RELEASE,
};

struct control_line {
	enum control_line_verb verb;
	char id[QUEUE_ID_LEN + 1];   /* "" when the request names none */
};

/*
 * Parse one request line (p, len), without its LF (a trailing CR is
 * allowed). 0, or -1 with a short reason in *why (a static string).
 */
int control_line_parse(const char *p, size_t len, struct control_line *req,
    const char **why);

/* The line for req, with its LF, into buf: its length, or -1 if it does
 * not fit. */
int control_line_format(const struct control_line *req, char *buf,
    size_t size);

#endif
