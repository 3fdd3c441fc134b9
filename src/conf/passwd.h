/*
 * passwd.h - `tern passwd USER [FILE] [-c CONF]`: set a user's password
 * in passwd_file (config.h) as a yescrypt hash.
 */
#ifndef TERN_PASSWD_H
#define TERN_PASSWD_H

#include <stdbool.h>
#include <stddef.h>

/* The command; argv[1] is "passwd". Returns the exit status: 0, 1
 * (error), 64 (usage), 78 (configuration). */
int passwd_main(int argc, char **argv);

/* true if user can have a line in a passwd file: 1..255 bytes without
 * blanks, control characters or ':', and no '#' first (a comment). */
bool passwd_user_valid(const char *user);

/*
 * Replace or add USER's line of the passwd file text (old, oldlen; NULL
 * for none) with hash, keeping its addresses field; returns the new text
 * (caller frees), or NULL if old holds a NUL byte. A line is USER's as
 * the loader reads it: blanks before the name do not count. For the
 * command and its tests.
 */
char *passwd_update_text(const char *old, size_t oldlen, const char *user,
    const char *hash);

#endif
