/*
 * proctitle.h - the process title ps(1) shows: "tern: smtp", "tern:
 * queue", ... so an administrator tells the roles apart, as Postfix and
 * OpenSMTPD do. Linux keeps a process's command line in the memory of its
 * argv strings (and the environment strings right after them), so the
 * title is written over that area, after the environment has been copied
 * elsewhere; the kernel's short name (comm, /proc/PID/stat, top) is set
 * too, with prctl(PR_SET_NAME).
 */
#ifndef TERN_PROCTITLE_H
#define TERN_PROCTITLE_H

/* Once, early in main(), before anything keeps pointers into environ:
 * moves the environment to the heap and remembers the argv area. */
void proctitle_init(int argc, char **argv);

/* The title, cut to the argv area (and to 15 octets for comm). Before
 * proctitle_init only comm changes. */
void proctitle_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
