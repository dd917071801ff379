//! jnhp(1): the sections beyond what the command line definitions know
//! (files, environment, signals, exit status, see also). The rendering,
//! shared with jnhpd(8), is [`crate::man_roff`].

use std::io::{self, Write};

/// Writes the whole page for `command` (jnhp's `Cli::command()`).
pub fn render(command: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    crate::man_roff::render(command, "1", SECTIONS, out)
}

const SECTIONS: &str = r#".SH FILES
.TP
.I /usr/share/doc/jnhpd/protocol.md
JNHP/1, the protocol jnhp speaks; \fBjnhp batch\fR sends its lines as they
are.
.TP
.I /usr/share/doc/jnhpd/observability.md
The admin listener that \fBjnhp stats\fR and \fBjnhp names\fR read.
.TP
.I /usr/share/doc/jnhpd/performance.md
What \fBjnhp bench\fR measures, and figures to compare with.
.SH ENVIRONMENT
.TP
.B JNHP_ADDR
The server's host:port when \fB\-\-addr\fR is not given (default
127.0.0.1:8111).
.TP
.B JNHP_ADMIN_ADDR
The admin listener's host:port for \fBstats\fR and \fBnames\fR when
\fB\-\-admin\fR is not given (default 127.0.0.1:9111).
.TP
.BR SSL_CERT_FILE ", " SSL_CERT_DIR
With \fB\-\-tls\fR and no \fB\-\-ca\fR: the CA certificates to check the
server against (default: the system's).
.SH SIGNALS
SIGINT (Ctrl\-C) ends \fBnames \-\-follow\fR with status 0, after printing
on stderr the cursor to go on from; otherwise jnhp keeps the default
actions.
.SH EXIT STATUS
.TP
.B 0
Stored (\fBstore\fR), present (\fBexists\fR), found (\fBget\fR); every
request answered without an ERROR (\fBbatch\fR); done (\fBbench\fR,
\fBstats\fR, \fBnames\fR).
.TP
.B 1
Not stored: RARGH! (\fBstore\fR); absent (\fBexists\fR, \fBget\fR).
.TP
.B 2
An error: the server could not be reached or did not answer in time, an
ERROR reply, a request or reply missing in \fBbatch\fR, or a command line
that could not be parsed. The message is on stderr.
.SH SEE ALSO
.BR jnhpd (8)
.PP
/usr/share/doc/jnhpd/protocol.md, /usr/share/doc/jnhpd/README.md.
"#;
