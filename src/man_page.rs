//! jnhpd(8): the sections an operator needs beyond what the command line
//! definitions know (files, environment, signals, exit status, see also).
//! The rendering, shared with jnhp(1), is [`crate::man_roff`].

use std::io::{self, Write};

/// Writes the whole page for `command` (jnhpd's `Cli::command()`).
pub fn render(command: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    crate::man_roff::render(command, "8", SECTIONS, out)
}

const SECTIONS: &str = r#".SH FILES
.TP
.I /etc/jnhp.toml
The configuration the package installs (a conffile) and the unit passes
with \fB\-\-config\fR. Every key: /usr/share/doc/jnhpd/configuration.md.
.TP
.I /var/lib/jnhpd/data
The data file of the packaged configuration (\fBstorage.path\fR), in the
unit's state directory (with DynamicUser, systemd keeps it in
/var/lib/private/jnhpd). Removing the package keeps it; purging deletes it.
.TP
.I /usr/lib/systemd/system/jnhpd.service
The unit: Type=notify, \fBsystemctl reload jnhpd\fR sends SIGHUP,
\fBsystemctl stop jnhpd\fR sends SIGTERM. Enabled and started on install.
.TP
.I /lib/systemd/system/jnhpd.socket
Socket activation, opt\-in: \fBsystemctl enable \-\-now jnhpd.socket\fR.
.TP
.I /usr/lib/jnhp/validators/
Example validator programs and helpers to copy.
.TP
.I /usr/share/doc/jnhpd/
The documentation: protocol.md, configuration.md, validators.md,
operations.md, observability.md, tls.md, postgres.md and the others.
.SH ENVIRONMENT
.TP
.B NOTIFY_SOCKET
Set by systemd for Type=notify: jnhpd sends READY=1 once it serves (its
data file replayed), RELOADING=1 and READY=1 around a reload, STOPPING=1
when it stops.
.TP
.BR LISTEN_FDS ", " LISTEN_PID
Set by systemd for socket activation: jnhpd serves JNHP/1 on the sockets
passed to it and ignores \fBserver.listen\fR.
.TP
.B JOURNAL_STREAM
Set by systemd when stderr goes to the journal: log lines carry a priority
prefix (<3> for errors) instead of a timestamp, so \fBjournalctl \-p err\fR
finds them.
.TP
.B PGPASSWORD
The PostgreSQL password when neither \fBstorage.postgres.password_file\fR
nor the URL gives one.
.TP
.BR SSL_CERT_FILE ", " SSL_CERT_DIR
CA certificates for PostgreSQL over TLS when the URL names no
\fBsslrootcert\fR (default: the system's).
.TP
.B PATH
Where a validator \fBcommand\fR without a slash is looked up.
.PP
Validator programs and helpers inherit jnhpd's environment without
PGPASSWORD, plus JNHP_NAME, JNHP_VALUE_BYTES and, over TLS, the client's
identity (/usr/share/doc/jnhpd/validators.md).
.SH SIGNALS
.TP
.BR SIGTERM ", " SIGINT
Stop accepting, answer the requests in flight for up to
\fBserver.shutdown_grace_secs\fR, sync the data file, exit 0. A second
signal stops at once. During start\-up (a long replay) the start ends
cleanly, exit 0.
.TP
.B SIGHUP
Re\-read the config file: validators, log level, TLS certificates, the
PostgreSQL password, \fBvalidation.deadline_ms\fR; with
\fBlog.target = "file"\fR, reopen the log file, and the decision log's
file (\fBvalidation.decision_log\fR) (logrotate's way). A file that fails a check is refused and the running
configuration stays. Other sections need a restart.
.PP
Signals are never fatal: until the handlers exist they are held, not acted
on.
.SH EXIT STATUS
.TP
.B 0
jnhpd stopped after SIGTERM or SIGINT; \fB\-\-check\-config\fR found the
configuration good; a command completed (\fB\-\-daemon\fR: the daemon
serves).
.TP
.B 1
The configuration is wrong (the message names file, line and key), the
start failed (a busy port, a live pidfile, a damaged data file), or a
command failed (a data file found damaged).
.TP
.B 2
The command line could not be parsed.
.SH SEE ALSO
.BR jnhp (1)
.PP
/usr/share/doc/jnhpd/operations.md (installing, systemd, upgrades, the
data file), /usr/share/doc/jnhpd/configuration.md (every key, signals),
/usr/share/doc/jnhpd/protocol.md (JNHP/1).
"#;
