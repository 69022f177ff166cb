//! The handle's own tests: reads, writes, caps, cycle and destroy.

use super::*;

fn loaded(items: &[(&str, &str)]) -> SessionStorage {
    SessionStorage::new(
        Some((SessionId::generate(), PublicId::generate())),
        Some((items.iter().copied().collect(), Meta::new())),
        100,
        1000,
    )
}

#[test]
fn reads_see_own_writes_over_the_snapshot() {
    let s = loaded(&[("a", "1"), ("b", "2")]);
    s.set_item("a", "x").unwrap();
    assert_eq!(s.get_item("a").as_deref(), Some("x"));
    assert_eq!(s.remove_item("b").as_deref(), Some("2"));
    assert_eq!(s.get_item("b"), None);
    s.clear();
    assert_eq!(s.get_item("a"), None);
    s.set_item("c", "3").unwrap();
    let out = s.finish();
    assert!(out.changes.cleared());
    assert_eq!(out.changes.iter().collect::<Vec<_>>(), [("c", Some("3"))]);
}

#[test]
fn empty_value_removes() {
    let s = loaded(&[("a", "1")]);
    s.set_item("a", "").unwrap();
    assert_eq!(s.get_item("a"), None);
    assert_eq!(s.finish().changes.get("a"), Some(None));
}

#[test]
fn caps_refuse_and_change_nothing() {
    let s = SessionStorage::new(None, None, 2, 10);
    s.set_item("a", "1").unwrap();
    s.set_item("b", "2").unwrap();
    assert!(matches!(
        s.set_item("c", "3"),
        Err(SessionError::TooManyItems { limit: 2 })
    ));
    // Overwriting an existing key does not add an item.
    s.set_item("a", "1234").unwrap();
    assert!(matches!(
        s.set_item("a", "12345678"),
        Err(SessionError::TooLarge {
            limit: 10,
            size: 11
        })
    ));
    assert_eq!(s.get_item("a").as_deref(), Some("1234"));
    assert_eq!(s.get_item("c"), None);
    // Removing frees room.
    s.remove_item("b");
    s.set_item("c", "3").unwrap();
}

#[test]
fn caps_count_the_loaded_items_too() {
    let base: Items = [("a", "12345"), ("b", "1")].into_iter().collect();
    let s = SessionStorage::new(
        Some((SessionId::generate(), PublicId::generate())),
        Some((base, Meta::new())),
        3,
        12,
    );
    // 6 + 2 loaded bytes; "c" + "1234" would make 13.
    assert!(matches!(
        s.set_item("c", "1234"),
        Err(SessionError::TooLarge {
            limit: 12,
            size: 13
        })
    ));
    s.remove_item("b");
    s.set_item("c", "1234").unwrap();
    s.set_item("d", "").unwrap();
    assert!(matches!(
        s.set_item("e", "1"),
        Err(SessionError::TooLarge { .. }) | Err(SessionError::TooManyItems { .. })
    ));
    s.set_item("a", "1").unwrap();
    s.set_item("e", "1").unwrap();
    assert!(matches!(
        s.set_item("f", "1"),
        Err(SessionError::TooManyItems { limit: 3 })
    ));
}

#[test]
fn writes_after_finish_are_refused() {
    let s = loaded(&[("a", "1")]);
    let out = s.finish();
    assert!(out.changes.is_empty());
    assert!(matches!(s.set_item("a", "2"), Err(SessionError::Finished)));
    assert_eq!(s.remove_item("a"), None);
    s.clear();
    s.destroy();
    assert_eq!(s.get_item("a"), None);
    assert!(s.id().is_some(), "the id stays readable");
}

#[test]
fn destroy_forgets_everything_and_later_writes_start_afresh() {
    let s = loaded(&[("a", "1")]);
    let id = s.id();
    s.set_item("b", "2").unwrap();
    s.cycle_id();
    s.destroy();
    assert_eq!(s.get_item("a"), None);
    assert_eq!(s.id(), None);
    s.set_item("flash", "bye").unwrap();
    let out = s.finish();
    assert_eq!(out.destroyed, id);
    assert!(!out.cycle);
    assert_eq!(
        out.changes.iter().collect::<Vec<_>>(),
        [("flash", Some("bye"))]
    );
}

#[test]
fn id_is_none_after_cycle_id_until_the_response_tells_the_new_one() {
    let s = loaded(&[("a", "1")]);
    let old = s.id();
    assert!(old.is_some());
    s.cycle_id();
    assert_eq!(s.id(), None, "the loaded id dies with this response");
    s.set_item("b", "2").unwrap();
    assert_eq!(s.id(), None);
    let out = s.finish();
    assert!(out.cycle);
    let new = SessionId::generate();
    s.set_final_id(Some(new));
    assert_eq!(s.id(), Some(new), "a handle kept past the response");
    assert_ne!(s.id(), old);
}

#[test]
fn a_cycle_that_was_not_applied_leaves_the_loaded_id() {
    // A 5xx answer persists nothing: the loaded id is still the client's.
    let s = loaded(&[("a", "1")]);
    let old = s.id();
    s.cycle_id();
    s.finish();
    assert_eq!(s.id(), old);
}

#[test]
fn id_is_none_after_destroy() {
    let s = loaded(&[("a", "1")]);
    s.destroy();
    assert_eq!(s.id(), None);
    s.set_item("flash", "bye").unwrap();
    assert_eq!(s.id(), None, "the new session's id comes with the response");
}

#[test]
fn a_detached_handle_has_no_id_and_reads_back_its_writes() {
    let s = SessionStorage::detached();
    assert_eq!(s.id(), None);
    assert_eq!(s.get_item("k"), None);
    s.set_item("k", "v").unwrap();
    assert_eq!(s.get_item("k").as_deref(), Some("v"));
    assert_eq!(s.id(), None, "no store gives it an id");
    s.cycle_id();
    s.destroy();
    assert_eq!(s.get_item("k"), None);
    s.set_item("k", "again").unwrap();
    assert_eq!(s.get_item("k").as_deref(), Some("again"));
    // The layer's default caps.
    let too_big = "x".repeat(DEFAULT_MAX_SESSION_BYTES);
    assert!(matches!(
        s.set_item("big", &too_big),
        Err(SessionError::TooLarge { .. })
    ));
}

#[test]
fn a_seeded_detached_handle_reads_like_a_loaded_session() {
    let s = SessionStorage::detached_with([("a", "1"), ("b", ""), ("a", "2"), ("c", "3")]);
    assert_eq!(s.id(), None);
    assert_eq!(s.get_item("a").as_deref(), Some("2"), "the later pair wins");
    assert_eq!(s.get_item("b"), None, "an empty value sets nothing");
    assert_eq!(s.remove_item("c").as_deref(), Some("3"));
    s.clear();
    assert_eq!(s.get_item("a"), None);
    let owned = vec![("k".to_owned(), "v".to_owned())];
    let s = SessionStorage::detached_with(owned);
    assert_eq!(s.get_item("k").as_deref(), Some("v"));
}

#[test]
fn debug_prints_no_id_and_no_item() {
    let s = loaded(&[("token", "secret-value")]);
    let id = s.id().unwrap().to_string();
    let dbg = format!("{s:?}");
    assert!(!dbg.contains(&id) && !dbg.contains("secret") && !dbg.contains("token"));
}

#[cfg(feature = "serde")]
#[test]
fn typed_values_round_trip_as_json() {
    let s = SessionStorage::new(None, None, 10, 1000);
    s.insert("cart", &vec![1u32, 2]).unwrap();
    assert_eq!(s.get_item("cart").as_deref(), Some("[1,2]"));
    assert_eq!(s.get::<Vec<u32>>("cart").unwrap(), Some(vec![1, 2]));
    assert!(matches!(s.get::<u32>("cart"), Err(SessionError::Json(_))));
    assert_eq!(s.get::<u32>("none").unwrap(), None);
}

#[test]
fn storage_is_object_safe() {
    let s = SessionStorage::new(None, None, 10, 1000);
    let dyn_storage: &dyn Storage = &s;
    dyn_storage.set_item("k", "v").unwrap();
    assert_eq!(dyn_storage.get_item("k").as_deref(), Some("v"));
    assert_eq!(dyn_storage.remove_item("k").as_deref(), Some("v"));
}
