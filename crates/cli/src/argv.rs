//! Options before the command, as `rbd` takes them: `rbdx -p rbd ls` and `rbdx --pool rbd
//! --image x info` mean `rbdx ls -p rbd` and `rbdx info --pool rbd --image x`. clap accepts a
//! command's own options only after the command, so the command line is reordered before it is
//! parsed: options that precede the command and are not global are moved to just after the
//! command's name (its subcommand path), in their order. Global options stay where they are.

use std::ffi::OsString;

use clap::{Arg, Command};

/// How an option token names its argument.
enum Name<'a> {
    Long(&'a str),
    Short(char),
}

/// Splits an option token into its name and an inline value (`--pool=rbd`, `-prbd`).
fn split(token: &str) -> Option<(Name<'_>, bool)> {
    if let Some(long) = token.strip_prefix("--") {
        let (name, value) = match long.split_once('=') {
            Some((n, _)) => (n, true),
            None => (long, false),
        };
        return (!name.is_empty()).then_some((Name::Long(name), value));
    }
    let mut chars = token.strip_prefix('-')?.chars();
    let first = chars.next()?;
    Some((Name::Short(first), chars.next().is_some()))
}

fn matches(arg: &Arg, name: &Name<'_>) -> bool {
    match name {
        Name::Long(l) => {
            arg.get_long() == Some(l) || arg.get_all_aliases().is_some_and(|a| a.contains(l))
        }
        Name::Short(c) => arg.get_short() == Some(*c),
    }
}

/// Finds the argument `name` in `cmd` or any of its subcommands (depth first).
fn find<'c>(cmd: &'c Command, name: &Name<'_>) -> Option<&'c Arg> {
    cmd.get_arguments()
        .find(|a| matches(a, name))
        .or_else(|| cmd.get_subcommands().find_map(|s| find(s, name)))
}

/// Returns the command line with the options that precede the command moved after its path.
pub fn reorder(args: Vec<OsString>, root: &Command) -> Vec<OsString> {
    let mut kept = Vec::with_capacity(args.len());
    let mut moved = Vec::new();
    let mut rest = args.into_iter();
    kept.extend(rest.next());
    let mut rest = rest.peekable();
    while let Some(token) = rest.peek() {
        let Some(text) = token.to_str() else { break };
        if text == "--" || text == "-" || !text.starts_with('-') {
            break;
        }
        let Some((name, inline)) = split(text) else {
            break;
        };
        let global = root.get_arguments().find(|a| matches(a, &name));
        let known = global.or_else(|| find(root, &name));
        let takes_value = known.is_some_and(|a| a.get_action().takes_values());
        let into = if global.is_some() || known.is_none() {
            &mut kept
        } else {
            &mut moved
        };
        into.extend(rest.next());
        if takes_value && !inline {
            into.extend(rest.next());
        }
    }
    if moved.is_empty() {
        kept.extend(rest);
        return kept;
    }
    // The command's path: names (or aliases) of nested subcommands.
    let mut cmd = root;
    while let Some(token) = rest.peek() {
        let Some(sub) = token.to_str().and_then(|t| {
            cmd.get_subcommands()
                .find(|s| s.get_name() == t || s.get_all_aliases().any(|a| a == t))
        }) else {
            break;
        };
        cmd = sub;
        kept.extend(rest.next());
    }
    kept.extend(moved);
    kept.extend(rest);
    kept
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::reorder;
    use crate::args::Cli;

    fn run(line: &str) -> String {
        let args = line.split(' ').map(Into::into).collect();
        let out = reorder(args, &Cli::command());
        out.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn command_options_before_the_command_move_after_it() {
        assert_eq!(run("rbdx --pool rbd ls"), "rbdx ls --pool rbd");
        assert_eq!(run("rbdx -p rbd ls -l"), "rbdx ls -p rbd -l");
        assert_eq!(
            run("rbdx -p rbd --image x snap ls --format json"),
            "rbdx snap ls -p rbd --image x --format json"
        );
        assert_eq!(run("rbdx --pool=rbd ls"), "rbdx ls --pool=rbd");
    }

    #[test]
    fn global_options_and_ordinary_lines_stay_as_they_are() {
        for line in [
            "rbdx ls -p rbd",
            "rbdx --format json ls",
            "rbdx --data-dir /d info x",
            "rbdx -v info x",
        ] {
            assert_eq!(run(line), line);
        }
        assert_eq!(
            run("rbdx --format json -p rbd ls"),
            "rbdx --format json ls -p rbd"
        );
    }
}
