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

#endif
