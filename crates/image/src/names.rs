//! Object names, as RBD's format 2 spells them.

/// The pool directory: `name_<name>` -> id and `id_<id>` -> name in its omap.
pub const DIRECTORY: &str = "rbd_directory";
/// The children registry: parent spec -> child ids.
pub const CHILDREN: &str = "rbd_children";
/// The trash: `id_<id>` -> trash record.
pub const TRASH: &str = "rbd_trash";
/// Pool-level RBD information (created by `pool init`).
pub const INFO: &str = "rbd_info";

/// The object holding an image's id: `rbd_id.<name>`.
pub fn id_object(name: &str) -> String {
    format!("rbd_id.{name}")
}

/// An image's header: `rbd_header.<id>`.
pub fn header_object(id: &str) -> String {
    format!("rbd_header.{id}")
}

/// The prefix of an image's data objects: `rbd_data.<id>`.
pub fn data_prefix(id: &str) -> String {
    format!("rbd_data.{id}")
}

/// A data object: `rbd_data.<id>.<objectno as %016x>`.
pub fn data_object(prefix: &str, objectno: u64) -> String {
    use std::fmt::Write as _;
    // Sized once: every read and write names its object, and `format!` grows the string
    // a few times on the way.
    let mut name = String::with_capacity(prefix.len() + 17);
    name.push_str(prefix);
    let _ = write!(name, ".{objectno:016x}");
    name
}

/// The object map of the head (`snap == None`) or a snapshot:
/// `rbd_object_map.<id>[.<snapid as %016x>]`.
pub fn object_map_object(id: &str, snap: Option<u64>) -> String {
    match snap {
        None => format!("rbd_object_map.{id}"),
        Some(snap) => format!("rbd_object_map.{id}.{snap:016x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rbd_format_2() {
        assert_eq!(
            data_object("rbd_data.abc", 255),
            "rbd_data.abc.00000000000000ff"
        );
        assert_eq!(
            object_map_object("abc", Some(4)),
            "rbd_object_map.abc.0000000000000004"
        );
        assert_eq!(header_object("abc"), "rbd_header.abc");
    }
}
