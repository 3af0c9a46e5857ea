/* commands.h - the etcdseal subcommands. Each takes the arguments after its name (argv[0] is the
 * subcommand name) and returns the process exit status. Only src/cmd/ may print to stdout or
 * call exit(). */
#ifndef ETCDSEAL_CMD_COMMANDS_H
#define ETCDSEAL_CMD_COMMANDS_H

int cmd_version(int argc, char **argv);
int cmd_proxy(int argc, char **argv);
int cmd_check_config(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_encrypt(int argc, char **argv);
int cmd_decrypt(int argc, char **argv);
int cmd_kms_plugin(int argc, char **argv);
int cmd_help(int argc, char **argv);

#define ETCDSEAL_VERSION "0.1.0"

#endif
