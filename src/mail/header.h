/*
 * header.h - RFC 5322 header fields in a message's raw text: what the smtp
 * session (submission checks, the mail-loop count while data arrives) and
 * the queue (the loop check of a spooled message) both need to recognise.
 *
 * Everything works on pointer + length views of CRLF or LF lines; nothing
 * relies on a NUL.
 */
#ifndef TERN_MAIL_HEADER_H
#define TERN_MAIL_HEADER_H

#include <stdbool.h>
#include <stddef.h>

/*
 * true if the header line (line, n) starts the field called name: the
 * name in any case, optional WSP, then a colon (RFC 5322 2.2 and the WSP
 * of the obsolete syntax, 4.5). A continuation line is no field.
 */
bool header_field_is(const char *line, size_t n, const char *name);

/*
 * How many fields called name the header section of msg (len octets, up
 * to the first empty line) has; counting stops at stop.
 */
unsigned header_count(const char *msg, size_t len, const char *name,
    unsigned stop);

#endif
