//! Image specs as `rbd` writes them: `[pool/[namespace/]]image[@snap]`, completed by the
//! `--pool`, `--namespace`, `--image` and `--snap` options (default pool `rbd`).

use crate::error::{CliError, CliResult};

/// The default pool of image commands.
pub const DEFAULT_POOL: &str = "rbd";

/// An image (or snapshot) named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Pool name.
    pub pool: String,
    /// Namespace (empty for the default one).
    pub namespace: String,
    /// Image name.
    pub image: String,
    /// Snapshot name, if one was given.
    pub snap: Option<String>,
}

impl std::fmt::Display for ImageSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/", self.pool)?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        f.write_str(&self.image)?;
        if let Some(snap) = &self.snap {
            write!(f, "@{snap}")?;
        }
        Ok(())
    }
}

/// The `--pool`, `--namespace`, `--image`, `--snap` options of a command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SpecOptions {
    /// Pool name.
    #[arg(short = 'p', long = "pool", value_name = "POOL")]
    pub pool: Option<String>,
    /// Namespace name.
    #[arg(long = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Image name.
    #[arg(long = "image", value_name = "IMAGE")]
    pub image: Option<String>,
    /// Snapshot name.
    #[arg(long = "snap", value_name = "SNAP")]
    pub snap: Option<String>,
}

/// Whether a command takes, needs or refuses a snapshot in its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapRule {
    /// The spec must not name a snapshot.
    None,
    /// A snapshot is optional.
    Optional,
    /// A snapshot is required.
    Required,
}

/// The parts a spec names: pool, namespace, image and snapshot.
type SpecParts = (Option<String>, Option<String>, String, Option<String>);

/// Takes a part from the spec or from its option; both may name it only if they agree.
fn pick(
    from_spec: Option<String>,
    from_opt: &Option<String>,
    what: &str,
) -> CliResult<Option<String>> {
    match (from_spec, from_opt) {
        (Some(a), Some(b)) if a != *b => Err(CliError::invalid(format!(
            "the {what} is given twice: '{a}' in the spec and '{b}' as an option"
        ))),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b.clone()),
    }
}

fn split_spec(text: &str) -> CliResult<SpecParts> {
    let (path, snap) = match text.split_once('@') {
        Some((path, snap)) => (path, Some(snap.to_owned())),
        None => (text, None),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let (pool, namespace, image) = match parts.as_slice() {
        [image] => (None, None, *image),
        [pool, image] => (Some(*pool), None, *image),
        [pool, namespace, image] => (Some(*pool), Some(*namespace), *image),
        _ => {
            return Err(CliError::invalid(format!(
                "invalid image spec '{text}': expected [pool/[namespace/]]image[@snap]"
            )));
        }
    };
    Ok((
        pool.map(str::to_owned),
        namespace.map(str::to_owned),
        image.to_owned(),
        snap,
    ))
}

impl SpecOptions {
    /// Resolves the positional spec (if any) and the options into an image spec.
    pub fn resolve(&self, positional: Option<&str>, rule: SnapRule) -> CliResult<ImageSpec> {
        // Without a positional spec, `--image` holds one, as with `rbd` (`--image rbd/ns/x`).
        let (positional, image_opt) = match (positional, &self.image) {
            (None, Some(text)) => (Some(text.as_str()), None),
            (positional, image) => (positional, image.clone()),
        };
        let (pool, namespace, image, snap) = match positional {
            Some(text) => split_spec(text)?,
            None => (None, None, String::new(), None),
        };
        let pool = pick(pool, &self.pool, "pool")?.unwrap_or_else(|| DEFAULT_POOL.to_owned());
        let namespace = pick(namespace, &self.namespace, "namespace")?.unwrap_or_default();
        let image = pick(
            (!image.is_empty()).then_some(image),
            &image_opt,
            "image name",
        )?
        .ok_or_else(|| CliError::invalid("image name was not specified"))?;
        let snap = pick(snap, &self.snap, "snapshot name")?;
        match (rule, &snap) {
            (SnapRule::None, Some(s)) => Err(CliError::invalid(format!(
                "snapshot name '{s}' was given, but this command works on images"
            ))),
            (SnapRule::Required, None) => Err(CliError::invalid("snapshot name was not specified")),
            _ => Ok(ImageSpec {
                pool,
                namespace,
                image,
                snap,
            }),
        }
    }
}

/// A trashed image named by id: its pool, namespace and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageIdSpec {
    /// Pool name.
    pub pool: String,
    /// Namespace (empty for the default one).
    pub namespace: String,
    /// Image id.
    pub id: String,
}

/// Resolves an image id spec `[pool/[namespace/]]image-id` with `--pool`, `--namespace` and
/// `--image-id`, as `rbd` does for the commands that name a trashed image.
pub fn resolve_image_id(
    positional: Option<&str>,
    pool: &Option<String>,
    namespace: &Option<String>,
    image_id: &Option<String>,
) -> CliResult<ImageIdSpec> {
    let (p, ns, id, snap) = match positional {
        Some(text) => split_spec(text)?,
        None => (None, None, String::new(), None),
    };
    if let Some(snap) = snap {
        return Err(CliError::invalid(format!(
            "snapshot name '{snap}' was given, but this command takes an image id"
        )));
    }
    Ok(ImageIdSpec {
        pool: pick(p, pool, "pool")?.unwrap_or_else(|| DEFAULT_POOL.to_owned()),
        namespace: pick(ns, namespace, "namespace")?.unwrap_or_default(),
        id: pick((!id.is_empty()).then_some(id), image_id, "image id")?
            .ok_or_else(|| CliError::invalid("image id was not specified"))?,
    })
}

/// Resolves a pool (and namespace) spec `pool[/namespace]` with `--pool`/`--namespace`.
pub fn resolve_pool(
    positional: Option<&str>,
    pool: &Option<String>,
    namespace: &Option<String>,
) -> CliResult<(String, String)> {
    let (p, ns) = match positional {
        Some(text) => match text.split_once('/') {
            Some((p, ns)) => (Some(p.to_owned()), Some(ns.to_owned())),
            None => (Some(text.to_owned()), None),
        },
        None => (None, None),
    };
    let pool = p
        .or_else(|| pool.clone())
        .unwrap_or_else(|| DEFAULT_POOL.to_owned());
    let namespace = ns.or_else(|| namespace.clone()).unwrap_or_default();
    Ok((pool, namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_fill_in_from_options_and_defaults() {
        let opts = SpecOptions::default();
        let s = opts.resolve(Some("img"), SnapRule::None).unwrap();
        assert_eq!((s.pool.as_str(), s.namespace.as_str()), ("rbd", ""));
        let s = opts
            .resolve(Some("p/ns/img@s"), SnapRule::Optional)
            .unwrap();
        assert_eq!(s.to_string(), "p/ns/img@s");
        let opts = SpecOptions {
            pool: Some("p2".into()),
            snap: Some("x".into()),
            ..SpecOptions::default()
        };
        let s = opts.resolve(Some("img"), SnapRule::Required).unwrap();
        assert_eq!(s.to_string(), "p2/img@x");
    }

    #[test]
    fn the_image_option_takes_a_spec() {
        let opts = SpecOptions {
            image: Some("p/ns/img".into()),
            ..SpecOptions::default()
        };
        let s = opts.resolve(None, SnapRule::None).unwrap();
        assert_eq!(s.to_string(), "p/ns/img");
        let opts = SpecOptions {
            image: Some("p/img".into()),
            pool: Some("p".into()),
            ..SpecOptions::default()
        };
        assert_eq!(
            opts.resolve(None, SnapRule::None).unwrap().to_string(),
            "p/img"
        );
        let opts = SpecOptions {
            image: Some("p/img".into()),
            pool: Some("other".into()),
            ..SpecOptions::default()
        };
        assert!(opts.resolve(None, SnapRule::None).is_err());
        let opts = SpecOptions {
            image: Some("img".into()),
            ..SpecOptions::default()
        };
        assert_eq!(
            opts.resolve(Some("img"), SnapRule::None)
                .unwrap()
                .to_string(),
            "rbd/img"
        );
    }

    #[test]
    fn image_ids_take_the_pool_and_namespace_spec() {
        let none = None;
        let id = resolve_image_id(Some("rbd/21ce336294d8"), &none, &none, &none).unwrap();
        assert_eq!((id.pool.as_str(), id.namespace.as_str()), ("rbd", ""));
        assert_eq!(id.id, "21ce336294d8");
        let id = resolve_image_id(Some("p/ns/abc"), &none, &none, &none).unwrap();
        assert_eq!(
            (id.pool.as_str(), id.namespace.as_str(), id.id.as_str()),
            ("p", "ns", "abc")
        );
        let id = resolve_image_id(None, &Some("p".into()), &None, &Some("abc".into())).unwrap();
        assert_eq!((id.pool.as_str(), id.id.as_str()), ("p", "abc"));
        assert!(resolve_image_id(None, &none, &none, &none).is_err());
        assert!(resolve_image_id(Some("p/abc"), &Some("q".into()), &none, &none).is_err());
        assert!(resolve_image_id(Some("abc@s"), &none, &none, &none).is_err());
    }

    #[test]
    fn conflicting_or_missing_parts_are_invalid() {
        let opts = SpecOptions {
            pool: Some("other".into()),
            ..SpecOptions::default()
        };
        assert!(opts.resolve(Some("p/img"), SnapRule::None).is_err());
        assert!(
            SpecOptions::default()
                .resolve(None, SnapRule::None)
                .is_err()
        );
        assert!(
            SpecOptions::default()
                .resolve(Some("a/b/c/d"), SnapRule::None)
                .is_err()
        );
        assert!(
            SpecOptions::default()
                .resolve(Some("i@s"), SnapRule::None)
                .is_err()
        );
        assert!(
            SpecOptions::default()
                .resolve(Some("i"), SnapRule::Required)
                .is_err()
        );
    }
}
