//! The roff rendering both man pages share: jnhpd(8) (src/man_page.rs) and
//! jnhp(1) (crates/jnhp/src/man_page.rs). clap_mangen renders what the
//! command line definitions know (name, synopsis, options, subcommands);
//! each page passes the hand-written sections beyond them. Subcommands are
//! described on the page rather than on pages of their own, so a page names
//! no page the package does not ship.
//!
//! The two binaries live in different crates and jnhp does not depend on
//! jnhpd, so jnhp includes this file with `#[path]`: it is packaging code
//! with no place in jnhp-client or jnhp-wire, and too small for a crate of
//! its own. It therefore uses only std, clap and clap_mangen, which both
//! crates depend on.

use std::io::{self, Write};

use clap_mangen::Man;

/// Writes the whole page for `command` (the binary's `Cli::command()`) in
/// manual `section`, with the hand-written roff `sections` (FILES,
/// ENVIRONMENT, ... SEE ALSO) between the commands and the version.
pub fn render(
    mut command: clap::Command,
    section: &str,
    sections: &str,
    out: &mut dyn Write,
) -> io::Result<()> {
    command.build();
    let man = Man::new(command.clone()).section(section);
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
    page += sections;
    page += &piece(|w| man.render_version_section(w))?;
    out.write_all(page.as_bytes())
}

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
