//! Image, snapshot, pool and trashed-image specs as commands take them, with their options.

use clap::Args;

use crate::spec::SpecOptions;

/// An image spec argument with its options.
#[derive(Debug, Clone, Args)]
pub struct ImageArg {
    /// Image spec: `[pool/[namespace/]]image`.
    #[arg(value_name = "IMAGE_SPEC")]
    pub spec: Option<String>,
    #[command(flatten)]
    pub opts: SpecOptions,
}

/// The destination image of `rename` and `clone`: a spec and/or the `--dest-*` options.
#[derive(Debug, Clone, Args)]
pub struct DestArg {
    /// The destination image spec.
    #[arg(value_name = "DEST_IMAGE_SPEC")]
    pub dest_spec: Option<String>,
    /// The destination pool.
    #[arg(long = "dest-pool", value_name = "POOL")]
    pub dest_pool: Option<String>,
    /// The destination namespace.
    #[arg(long = "dest-namespace", value_name = "NAMESPACE")]
    pub dest_namespace: Option<String>,
    /// The destination image name.
    #[arg(long = "dest", value_name = "IMAGE")]
    pub dest_image: Option<String>,
}

impl DestArg {
    /// Returns the options part as spec options.
    pub fn options(&self) -> SpecOptions {
        SpecOptions {
            pool: self.dest_pool.clone(),
            namespace: self.dest_namespace.clone(),
            image: self.dest_image.clone(),
            snap: None,
        }
    }
}

/// An image spec argument that must be given positionally (commands with more positional
/// arguments after it).
#[derive(Debug, Clone, Args)]
pub struct RequiredImageArg {
    /// Image spec: `[pool/[namespace/]]image`.
    #[arg(value_name = "IMAGE_SPEC")]
    pub spec: String,
    #[command(flatten)]
    pub opts: SpecOptions,
}

impl RequiredImageArg {
    /// Returns the equivalent optional-spec argument.
    pub fn to_arg(&self) -> ImageArg {
        ImageArg {
            spec: Some(self.spec.clone()),
            opts: self.opts.clone(),
        }
    }
}

/// A trashed image named by id, as `rbd` takes it: `[pool/[namespace/]]image-id` or the
/// `--pool`, `--namespace` and `--image-id` options.
#[derive(Debug, Clone, Args)]
pub struct ImageIdArg {
    /// Image id spec: `[pool/[namespace/]]image-id` (`trash ls` shows the id).
    #[arg(value_name = "IMAGE_ID_SPEC")]
    pub spec: Option<String>,
    /// Pool name.
    #[arg(short = 'p', long = "pool", value_name = "POOL")]
    pub pool: Option<String>,
    /// Namespace name.
    #[arg(long = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The image id.
    #[arg(long = "image-id", value_name = "IMAGE_ID")]
    pub image_id: Option<String>,
}

impl ImageIdArg {
    /// Resolves the spec and options into a pool, namespace and image id.
    pub fn resolve(&self) -> crate::error::CliResult<crate::spec::ImageIdSpec> {
        crate::spec::resolve_image_id(
            self.spec.as_deref(),
            &self.pool,
            &self.namespace,
            &self.image_id,
        )
    }
}

/// A pool spec argument with its options.
#[derive(Debug, Clone, Args)]
pub struct PoolArg {
    /// Pool spec: `pool[/namespace]`.
    #[arg(value_name = "POOL_SPEC")]
    pub spec: Option<String>,
    /// Pool name.
    #[arg(short = 'p', long = "pool", value_name = "POOL")]
    pub pool: Option<String>,
    /// Namespace name.
    #[arg(long = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}
