#!/bin/sh
# embed.sh SYMBOL FILE: print a C file defining `const char SYMBOL[]` with
# FILE's text, so the default configuration lives in one readable file
# (etc/default.conf) and is compiled into the binary.
set -eu
sym=$1
file=$2
printf '/* generated from %s by scripts/embed.sh; do not edit */\n' "$file"
printf 'extern const char %s[];\nconst char %s[] =\n' "$sym" "$sym"
sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$/\\n"/' "$file"
printf ';\n'
