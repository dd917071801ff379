//! jnhp(1): clap_mangen renders what the command line definitions know
//! (name, synopsis, options, commands); the sections beyond them (files,
//! environment, exit status, see also) are written here. Each command is
//! described on this page rather than on a page of its own, so the page
//! names no page the package does not ship.

use std::io::{self, Write};

use clap_mangen::Man;

/// Writes the whole page for `command` (jnhp's `Cli::command()`).
pub fn render(mut command: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    command.build();
    let man = Man::new(command.clone());
    let mut page = String::from(PREAMBLE);
    page += &piece(|w| man.render_title(w))?;
    page += &piece(|w| man.render_name_section(w))?;
    page += &piece(|w| man.render_synopsis_section(w))?;
    page += &piece(|w| man.render_description_section(w))?;
    page += &piece(|w| man.render_options_section(w))?;
    if visible_subcommands(&command).next().is_some() {
        page += ".SH COMMANDS\n";
        commands(&command, &mut page)?;
    }
    page += SECTIONS;
    page += &piece(|w| man.render_version_section(w))?;
    out.write_all(page.as_bytes())
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

/// What roff needs once, at the top: clap_mangen repeats it in every piece.
const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// One piece rendered by clap_mangen, without its copy of [`PREAMBLE`].
fn piece(render: impl Fn(&mut dyn Write) -> io::Result<()>) -> io::Result<String> {
    let mut buf = Vec::new();
    render(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text
        .lines()
        .filter(|line| !PREAMBLE.lines().any(|p| p == *line))
        .map(|line| format!("{line}\n"))
        .collect())
}

fn visible_subcommands(command: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
}

/// Each subcommand (and each of theirs) under its full name, with its
/// synopsis, description and own options (the global ones are described
/// once, above).
fn commands(command: &clap::Command, page: &mut String) -> io::Result<()> {
    for sub in visible_subcommands(command) {
        let own = sub.clone().mut_args(|arg| {
            let inherited =
                arg.is_global_set() || ["help", "version"].contains(&arg.get_id().as_str());
            // Positionals stay in the synopsis, which shows hidden ones too.
            let positional = arg.is_positional();
            arg.hide(inherited || positional)
        });
        let man = Man::new(own.clone());
        let name = sub.get_bin_name().unwrap_or(sub.get_name());
        *page += &format!(".SS \"{}\"\n", name.replace('-', "\\-"));
        let body = |render: &dyn Fn(&mut dyn Write) -> io::Result<()>| -> io::Result<String> {
            Ok(piece(render)?
                .lines()
                .filter(|line| !line.starts_with(".SH "))
                .map(|line| format!("{line}\n"))
                .collect())
        };
        *page += &body(&|w| man.render_synopsis_section(w))?;
        *page += ".PP\n";
        *page += &body(&|w| man.render_description_section(w))?;
        *page += &body(&|w| man.render_options_section(w))?;
        commands(sub, page)?;
    }
    Ok(())
}
