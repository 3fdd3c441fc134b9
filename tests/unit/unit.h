/*
 * unit.h - common includes for tern's cmocka unit tests.
 * Each test file is one binary; tests/run.py runs them with TAP output.
 */
#ifndef TERN_UNIT_H
#define TERN_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h must follow the headers above. */
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>

static inline int
unit_rm_entry_(const char *path, const struct stat *st, int flag,
    struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Remove a test's temporary directory and everything below it. */
static inline int
unit_rm_tree(const char *dir)
{
	return nftw(dir, unit_rm_entry_, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
