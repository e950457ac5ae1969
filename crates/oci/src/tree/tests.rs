//! Unit tests of the merge rules and of every path-escape case, on hand-built entries.

use super::*;

const M: Meta = Meta {
    mode: 0o644,
    uid: 1,
    gid: 2,
    mtime: 100,
};

fn op(path: &str, kind: OpKind) -> Op {
    Op {
        path: path.as_bytes().to_vec(),
        meta: M,
        kind,
        xattrs: 0,
    }
}
fn file(path: &str, tag: u64) -> Op {
    op(
        path,
        OpKind::File(Extent {
            spool: 0,
            offset: tag,
            len: 1,
        }),
    )
}
fn dir(path: &str) -> Op {
    op(path, OpKind::Dir)
}
fn symlink(path: &str, target: &str) -> Op {
    op(path, OpKind::Symlink(target.as_bytes().to_vec()))
}
fn hardlink(path: &str, target: &str) -> Op {
    op(path, OpKind::Hardlink(target.as_bytes().to_vec()))
}

fn paths(t: &Tree) -> Vec<String> {
    let mut v = Vec::new();
    t.walk(|p, _| v.push(String::from_utf8_lossy(p).into_owned()));
    v
}

fn offset(t: &Tree, path: &str) -> u64 {
    match &t
        .lookup(path)
        .unwrap_or_else(|| panic!("{path} missing"))
        .kind
    {
        Kind::File { data, .. } => data.offset,
        k => panic!("{path} is {k:?}"),
    }
}

fn apply_all(t: &mut Tree, layer: usize, ops: Vec<Op>) {
    for o in ops {
        t.apply(layer, o).unwrap();
    }
}

#[test]
fn walk_is_sorted_depth_first_with_implicit_parents() {
    let mut t = Tree::new(100);
    apply_all(
        &mut t,
        1,
        vec![file("b/z", 1), file("a", 2), file("b/a/c", 3), dir("b")],
    );
    assert_eq!(paths(&t), ["", "a", "b", "b/a", "b/a/c", "b/z"]);
    assert_eq!(t.lookup("b").unwrap().meta, M);
    assert_eq!(t.lookup("b/a").unwrap().meta, Meta::ROOT_DIR);
    assert_eq!(t.len(), 6);
}

#[test]
fn later_layers_replace_entries_and_keep_directory_contents() {
    let mut t = Tree::new(100);
    apply_all(
        &mut t,
        1,
        vec![
            dir("d"),
            file("d/f", 1),
            file("x", 2),
            dir("y"),
            file("y/in", 3),
        ],
    );
    let m2 = Meta { mode: 0o700, ..M };
    apply_all(
        &mut t,
        2,
        vec![
            Op {
                meta: m2,
                ..dir("d")
            },
            dir("x"),
            file("y", 4),
        ],
    );
    assert_eq!(t.lookup("d").unwrap().meta.mode, 0o700);
    assert_eq!(offset(&t, "d/f"), 1);
    assert!(matches!(t.lookup("x").unwrap().kind, Kind::Dir(_)));
    assert_eq!(offset(&t, "y"), 4);
    assert!(t.lookup("y/in").is_none());
    assert_eq!(t.len(), 5);
}

#[test]
fn whiteouts_hide_lower_layers_only_in_any_order() {
    let mut t = Tree::new(100);
    apply_all(
        &mut t,
        1,
        vec![file("a", 1), file("b", 2), dir("d"), file("d/x", 3)],
    );
    // Layer 2 removes a and d (a directory), re-adds b before and after its own whiteout.
    apply_all(
        &mut t,
        2,
        vec![
            op(".wh.a", OpKind::Dir),
            file("b", 5),
            file(".wh.b", 0),
            file(".wh.d", 0),
            file(".wh.nothing", 0),
        ],
    );
    assert!(t.lookup("a").is_none());
    assert_eq!(offset(&t, "b"), 5);
    assert!(t.lookup("d").is_none());
    assert_eq!(paths(&t), ["", "b"]);
}

#[test]
fn whiteout_plus_same_layer_directory_keeps_only_new_contents() {
    let mut t = Tree::new(100);
    apply_all(&mut t, 1, vec![dir("d"), file("d/old", 1)]);
    apply_all(
        &mut t,
        2,
        vec![dir("d"), file("d/new", 2), file(".wh.d", 0)],
    );
    assert_eq!(paths(&t), ["", "d", "d/new"]);
}

#[test]
fn opaque_directory_hides_lower_contents_at_any_depth() {
    for marker_first in [true, false] {
        let mut t = Tree::new(100);
        apply_all(
            &mut t,
            1,
            vec![
                dir("d"),
                file("d/old", 1),
                dir("d/sub"),
                file("d/sub/deep", 2),
                file("keep", 3),
            ],
        );
        let mut l2 = vec![file("d/sub/new", 4), file("d/top", 5)];
        let marker = file("d/.wh..wh..opq", 0);
        if marker_first {
            l2.insert(0, marker)
        } else {
            l2.push(marker)
        }
        apply_all(&mut t, 2, l2);
        assert_eq!(
            paths(&t),
            ["", "d", "d/sub", "d/sub/new", "d/top", "keep"],
            "marker first: {marker_first}"
        );
        assert_eq!(
            t.lookup("d").unwrap().meta,
            M,
            "the opaque directory keeps its own metadata"
        );
    }
}

#[test]
fn aufs_metadata_is_ignored_and_bad_whiteouts_rejected() {
    let mut t = Tree::new(100);
    apply_all(
        &mut t,
        1,
        vec![file("a", 1), dir(".wh..wh.plnk"), file(".wh..wh.aufs", 0)],
    );
    assert_eq!(paths(&t), ["", "a"]);
    assert_eq!(
        t.apply(2, file(".wh.", 0)),
        Err(EntryProblem::BadWhiteout(".wh.".into()))
    );
    assert_eq!(
        t.apply(2, file("x/.wh...", 0)),
        Err(EntryProblem::BadWhiteout(".wh...".into()))
    );
}

// ---- path escapes: one test per case ------------------------------------------------------

#[test]
fn escape_dotdot_is_rejected() {
    let mut t = Tree::new(100);
    assert_eq!(
        t.apply(1, file("../../etc/passwd", 1)),
        Err(EntryProblem::EscapesRoot)
    );
    assert_eq!(
        t.apply(1, file("a/../../x", 1)),
        Err(EntryProblem::EscapesRoot)
    );
    assert_eq!(t.apply(1, file("./..", 1)), Err(EntryProblem::EscapesRoot));
    // `..` that stays inside is only a path spelling.
    t.apply(1, file("a/../b/./c", 7)).unwrap();
    assert_eq!(paths(&t), ["", "b", "b/c"]);
}

#[test]
fn escape_absolute_path_is_neutralised_to_the_image_root() {
    let mut t = Tree::new(100);
    t.apply(1, file("/etc/passwd", 1)).unwrap();
    t.apply(1, file("//etc//shadow", 2)).unwrap();
    assert_eq!(paths(&t), ["", "etc", "etc/passwd", "etc/shadow"]);
}

#[test]
fn escape_write_through_absolute_symlink_stays_inside() {
    let mut t = Tree::new(100);
    apply_all(&mut t, 1, vec![dir("etc"), symlink("evil", "/etc")]);
    apply_all(&mut t, 2, vec![file("evil/owned", 9)]);
    assert_eq!(offset(&t, "etc/owned"), 9);
    assert!(matches!(t.lookup("evil").unwrap().kind, Kind::Symlink(_)));
}

#[test]
fn escape_write_through_relative_symlink_climbing_out_stays_inside() {
    let mut t = Tree::new(100);
    apply_all(
        &mut t,
        1,
        vec![dir("a"), symlink("a/up", "../../../../../tmp")],
    );
    apply_all(&mut t, 2, vec![file("a/up/x", 4)]);
    // ../../.. stops at the image root, like a chroot: /tmp inside the image.
    assert_eq!(paths(&t), ["", "a", "a/up", "tmp", "tmp/x"]);
}

#[test]
fn escape_symlink_chain_and_loop() {
    let mut t = Tree::new(100);
    apply_all(
        &mut t,
        1,
        vec![
            symlink("l1", "l2"),
            symlink("l2", "/real"),
            dir("real"),
            symlink("loop", "loop"),
        ],
    );
    t.apply(2, file("l1/f", 3)).unwrap();
    assert_eq!(offset(&t, "real/f"), 3);
    assert_eq!(
        t.apply(2, file("loop/f", 3)),
        Err(EntryProblem::SymlinkLoop)
    );
}

#[test]
fn escape_final_symlink_is_replaced_never_followed() {
    let mut t = Tree::new(100);
    apply_all(
        &mut t,
        1,
        vec![file("etc/passwd", 1), symlink("link", "/etc/passwd")],
    );
    apply_all(&mut t, 2, vec![file("link", 2)]);
    assert_eq!(offset(&t, "etc/passwd"), 1);
    assert_eq!(offset(&t, "link"), 2);
    // Whiteouts do not follow a final symlink either.
    apply_all(&mut t, 3, vec![symlink("l2", "etc/passwd")]);
    apply_all(&mut t, 4, vec![file(".wh.l2", 0)]);
    assert_eq!(offset(&t, "etc/passwd"), 1);
}

#[test]
fn escape_hardlink_above_root_is_rejected() {
    let mut t = Tree::new(100);
    t.apply(1, file("etc/shadow", 1)).unwrap();
    assert_eq!(
        t.apply(1, hardlink("x", "../../etc/shadow")),
        Err(EntryProblem::HardlinkEscapesRoot("../../etc/shadow".into()))
    );
}

#[test]
fn escape_absolute_hardlink_resolves_inside_the_image() {
    let mut t = Tree::new(100);
    t.apply(1, file("etc/shadow", 1)).unwrap();
    t.apply(2, hardlink("x", "/etc/shadow")).unwrap();
    assert_eq!(offset(&t, "x"), 1);
}

#[test]
fn escape_hardlink_through_symlink_resolves_inside_the_image() {
    let mut t = Tree::new(100);
    apply_all(
        &mut t,
        1,
        vec![file("etc/shadow", 1), symlink("evil", "/etc")],
    );
    t.apply(2, hardlink("x", "evil/shadow")).unwrap();
    assert_eq!(offset(&t, "x"), 1);
}

#[test]
fn hardlink_to_missing_or_directory_is_rejected() {
    let mut t = Tree::new(100);
    t.apply(1, dir("d")).unwrap();
    assert_eq!(
        t.apply(1, hardlink("x", "nope")),
        Err(EntryProblem::HardlinkTargetMissing("nope".into()))
    );
    assert_eq!(
        t.apply(1, hardlink("x", "d")),
        Err(EntryProblem::HardlinkToDirectory("d".into()))
    );
    assert_eq!(
        t.apply(1, hardlink("x", ".")),
        Err(EntryProblem::HardlinkToDirectory(".".into()))
    );
}

#[test]
fn hardlinks_share_data_and_a_link_group() {
    let mut t = Tree::new(100);
    t.apply(
        1,
        Op {
            meta: Meta { mode: 0o4755, ..M },
            ..file("bin/su", 1)
        },
    )
    .unwrap();
    t.apply(1, hardlink("bin/su2", "bin/su")).unwrap();
    t.apply(2, hardlink("bin/su3", "./bin/su2")).unwrap();
    t.apply(2, hardlink("bin/su3", "bin/su3")).unwrap();
    let group = |p| match t.lookup(p).unwrap().kind {
        Kind::File { link_group, data } => (link_group, data.offset),
        _ => unreachable!(),
    };
    assert_eq!(group("bin/su"), (Some(0), 1));
    assert_eq!(group("bin/su2"), (Some(0), 1));
    assert_eq!(group("bin/su3"), (Some(0), 1));
    assert_eq!(t.lookup("bin/su3").unwrap().meta.mode, 0o4755);
}

#[test]
fn parent_that_is_a_file_is_rejected() {
    let mut t = Tree::new(100);
    t.apply(1, file("f", 1)).unwrap();
    assert_eq!(
        t.apply(1, file("f/x", 1)),
        Err(EntryProblem::ParentNotDirectory("f".into()))
    );
    t.apply(1, symlink("s", "f")).unwrap();
    assert_eq!(
        t.apply(1, file("s/x", 1)),
        Err(EntryProblem::ParentNotDirectory("f".into()))
    );
}

#[test]
fn root_entry_sets_root_metadata_only() {
    let mut t = Tree::new(100);
    assert_eq!(
        t.lookup("").unwrap().meta.mode,
        0o755,
        "a sane default, not backhand's 000"
    );
    t.apply(
        1,
        Op {
            meta: Meta { mode: 0o750, ..M },
            ..dir("./")
        },
    )
    .unwrap();
    assert_eq!(t.lookup("").unwrap().meta.mode, 0o750);
    assert_eq!(
        t.apply(1, file("/", 1)),
        Err(EntryProblem::RootNotDirectory)
    );
}

#[test]
fn limits_are_enforced() {
    let mut t = Tree::new(3);
    t.apply(1, file("a", 1)).unwrap();
    t.apply(1, file("b", 1)).unwrap();
    assert_eq!(
        t.apply(1, file("c", 1)),
        Err(EntryProblem::TooManyEntries(3))
    );
    assert_eq!(
        t.apply(1, file(&"x".repeat(256), 1)),
        Err(EntryProblem::NameTooLong)
    );
    assert_eq!(
        t.apply(1, file(&"a/".repeat(2049), 1)),
        Err(EntryProblem::PathTooLong)
    );

    // Symlinks cannot build a path deeper than the limit either.
    let mut t = Tree::new(1_000_000);
    let deep = "d/".repeat(1000);
    t.apply(1, symlink("s", &format!("/{deep}"))).unwrap();
    t.apply(1, symlink("s2", &format!("/s/{deep}"))).unwrap();
    t.apply(1, symlink("s3", &format!("/s2/{deep}"))).unwrap();
    assert_eq!(t.apply(1, file("s3/x", 1)), Err(EntryProblem::PathTooLong));
}
