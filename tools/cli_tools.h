/*
 * cli_tools.h -- what the `aims` subcommands in tools/ share: exit codes,
 * the one-line failure report, argument parsing and JSON output helpers.
 * aims_cli.c holds the data subcommands (train, eval, predict, quantize,
 * inspect); cli_call.c and cli_plot.c the client and the charts, each in its
 * own file so none grows past a screenful of concerns.
 */
#ifndef CLI_TOOLS_H
#define CLI_TOOLS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CLI_EXIT_USAGE 2

/* "aims: WHAT: DETAIL" (DETAIL defaults to aims_errmsg()); returns 1. */
int cli_fail(const char *what, const char *detail);
/* Whole decimal integer, 0 or -1. */
int cli_parse_int(const char *s, int64_t *out);
/* Whole file ("-" = stdin) NUL-terminated, malloc'd; NULL with errno set. */
char *cli_read_file(const char *path, size_t *out_len);
/* @p s as a JSON string literal (control bytes and invalid UTF-8 escaped). */
void cli_json_string(FILE *f, const char *s, size_t n);

/* Subcommands; argv holds the words after the subcommand's name. */
int cli_call(int argc, char **argv);
int cli_plot(int argc, char **argv);

#endif /* CLI_TOOLS_H */
