//! `--config FILE`: a node's options from a TOML file (e.g. `synchrony.toml`), so that the
//! same file can be deployed on every machine. Its keys are the long option names (`name`,
//! `listen`, `peers`, `failure-timeout` or `failure_timeout`, ...); a list repeats the
//! option, `true` gives a flag, `false` leaves it out. The file's options go right after
//! the command's name, so that options on the command line, which come later, override it.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;

/// The command line with the file of its `--config FILE` (or `--config=FILE`), if any,
/// spelled out as options after the command's name.
pub(crate) fn expand(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let mut path = None;
    for (i, a) in args.iter().enumerate() {
        let a = a.to_string_lossy();
        if a == "--config" {
            path = args.get(i + 1).cloned();
        } else if let Some(p) = a.strip_prefix("--config=") {
            path = Some(p.into());
        }
    }
    let Some(path) = path else { return Ok(args) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.to_string_lossy()))?;
    let options = options(&text).with_context(|| format!("in {}", path.to_string_lossy()))?;
    // Every key must be an option of the command (said with the file's name, rather than
    // as an unexpected argument on a command line the user never typed).
    if let Some(sub) = args.get(1).and_then(|a| a.to_str()) {
        use clap::CommandFactory;
        if let Some(cmd) = crate::Cli::command().find_subcommand(sub) {
            let known: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
            for o in options.iter().filter_map(|o| o.strip_prefix("--")) {
                if !known.contains(&o) {
                    bail!(
                        "{}: {o:?} is not an option of `synchrony {sub}` (see `synchrony {sub} --help`)",
                        path.to_string_lossy()
                    );
                }
            }
        }
    }
    // After the program's name and the command's.
    let at = args.len().min(2);
    let mut out = args[..at].to_vec();
    out.extend(options.into_iter().map(OsString::from));
    out.extend_from_slice(&args[at..]);
    Ok(out)
}

/// The options a TOML text stands for.
fn options(text: &str) -> Result<Vec<String>> {
    let table: toml::Table = text.parse().context("not valid TOML")?;
    let mut out = Vec::new();
    for (key, value) in table {
        if key == "config" {
            bail!("a config file cannot name another (config = ...)");
        }
        let flag = format!("--{}", key.replace('_', "-"));
        let values = match value {
            toml::Value::Array(items) => items,
            v => vec![v],
        };
        for v in values {
            match v {
                toml::Value::String(s) => out.extend([flag.clone(), s]),
                toml::Value::Integer(n) => out.extend([flag.clone(), n.to_string()]),
                toml::Value::Float(x) => out.extend([flag.clone(), x.to_string()]),
                toml::Value::Boolean(true) => out.push(flag.clone()),
                toml::Value::Boolean(false) => {}
                other => bail!(
                    "{key}: {} is not an option's value (a string, number, boolean or a list of them)",
                    other.type_str()
                ),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{expand, options};
    use std::ffi::OsString;

    #[test]
    fn keys_become_options_and_lists_repeat() {
        let o = options(
            "name = \"n1\"\nlisten = \"10.0.0.1:7001\"\npeers = [\"a:7001\", \"b:7001\"]\nfailure_timeout = \"300ms\"\nrejoin = true\nweight = 1\nquiet = false\n",
        )
        .expect("parses");
        let want = [
            "--failure-timeout",
            "300ms",
            "--listen",
            "10.0.0.1:7001",
            "--name",
            "n1",
            "--peers",
            "a:7001",
            "--peers",
            "b:7001",
            "--rejoin",
            "--weight",
            "1",
        ];
        assert_eq!(o, want);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(options("name = ").is_err());
        assert!(options("[section]\nx = 1").unwrap_err().to_string().contains("section"));
        assert!(options("config = \"other.toml\"").is_err());
    }

    /// `synchrony node --config FILE EXTRA...` with FILE holding `text`, expanded.
    fn expand_with(tag: &str, text: &str, extra: &[&str]) -> anyhow::Result<Vec<String>> {
        let dir = std::env::temp_dir().join(format!("synchrony-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("synchrony.toml");
        std::fs::write(&f, text).expect("writes");
        let mut args: Vec<OsString> =
            ["synchrony", "node", "--config", f.to_str().expect("utf-8")].into_iter().map(OsString::from).collect();
        args.extend(extra.iter().map(OsString::from));
        let out = expand(args).map(|v| v.into_iter().map(|a| a.into_string().expect("utf-8")).collect());
        let _ = std::fs::remove_dir_all(&dir);
        out
    }

    #[test]
    fn a_key_that_is_no_option_names_the_file() {
        let e = expand_with("bad", "name = \"n1\"\nfailur-timeout = \"1s\"\n", &[]).expect_err("refused").to_string();
        assert!(e.contains("synchrony.toml") && e.contains("failur-timeout"), "{e}");
    }

    #[test]
    fn the_file_comes_before_the_command_line() {
        let out = expand_with("order", "name = \"n1\"\n", &["--name", "n2"]).expect("expands");
        assert_eq!(&out[..4], ["synchrony", "node", "--name", "n1"]);
        assert_eq!(&out[out.len() - 2..], ["--name", "n2"]);
    }
}
