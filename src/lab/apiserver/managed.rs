//! `metadata.managedFields` as kube-apiserver (1.18+) records them: one entry per (manager,
//! operation, apiVersion, subresource), with the time of that manager's last change and a
//! FieldsV1 set of the fields it set.
//!
//! What is simple (the lab needs who changed an object and when, not server-side apply's
//! conflict detection):
//! - an Update adds the fields it changed to its manager's set and takes them from nobody:
//!   other managers keep their sets as they were, and removed fields stay in every set;
//! - there is no schema: lists are atomic (`f:command: {}`) except the few whose merge key
//!   every Kubernetes schema gives (`containers` by name, `conditions` by type, …), and the
//!   maps whose keys are the user's (`data`, `labels`, …) are the ones that get `"."`;
//! - an Apply's set is what the applied configuration names, replacing that manager's set.
//!
//! What is faithful: the manager (`?fieldManager=` or the User-Agent up to its first `/`),
//! the entries' keys, order and time (changed only when that manager changed the object),
//! the metadata fields no set contains, and what a client may send: a non-empty list that
//! parses replaces the stored one, `[{}]` resets it, anything else (absent, `[]`, garbage)
//! keeps the stored one, and a subresource write always keeps it.

use serde_json::{Map, Value, json};

/// Who is writing, and how.
pub struct Writer {
    pub manager: String,
    /// `Update` (create, update, patch) or `Apply` (server-side apply).
    pub operation: &'static str,
    pub api_version: String,
    /// `status` for writes through the status subresource, else empty.
    pub subresource: String,
    /// RFC 3339 seconds in UTC, as creationTimestamp.
    pub time: String,
}

/// kube-apiserver's `managerOrUserAgent`: the `fieldManager` query parameter, else the
/// User-Agent up to its first `/` (`kubectl/v1.28.2 (linux/amd64) kubernetes/abc` →
/// `kubectl`).
pub fn manager_name(field_manager: Option<&str>, user_agent: &str) -> String {
    match field_manager {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => user_agent.split('/').next().unwrap_or("").to_owned(),
    }
}

/// Top-level and metadata fields that no manager owns (apimachinery's stripMeta manager).
const STRIPPED: &[&str] = &["apiVersion", "kind"];
const STRIPPED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Maps whose keys the user chooses: their path is itself a member of the set (`"."`).
const GRANULAR_MAPS: &[&str] = &[
    "data",
    "binaryData",
    "stringData",
    "labels",
    "annotations",
    "nodeSelector",
    "capacity",
    "allocatable",
];

/// The merge keys of associative lists, by field name, as the built-in schemas give them.
fn list_keys(field: &str) -> Option<&'static [&'static str]> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "containerStatuses"
        | "initContainerStatuses" => &["name"],
        "conditions" | "addresses" => &["type"],
        "ownerReferences" => &["uid"],
        "volumeMounts" => &["mountPath"],
        "ports" => &["containerPort", "protocol"],
        _ => return None,
    })
}

/// `k:{"name":"x"}` for an item of an associative list, if it has every key.
fn item_key(item: &Value, keys: &[&str]) -> Option<String> {
    let mut k = Map::new();
    for key in keys {
        match item.get(*key) {
            Some(v) if !v.is_null() => {
                k.insert((*key).to_owned(), v.clone());
            }
            // `ports` items often leave protocol out; TCP is its default.
            _ if *key == "protocol" => {
                k.insert("protocol".into(), json!("TCP"));
            }
            _ => return None,
        }
    }
    Some(format!("k:{}", Value::Object(k)))
}

/// The items of an associative list by their `k:` key; `None` when the list is atomic.
fn keyed_items<'a>(field: &str, list: &'a [Value]) -> Option<Vec<(String, &'a Value)>> {
    let keys = list_keys(field)?;
    list.iter()
        .map(|item| item_key(item, keys).map(|k| (k, item)))
        .collect()
}

/// The set of a whole value set under `field` (it is new): its path, and all below it.
fn whole(field: &str, v: &Value) -> Value {
    match v {
        Value::Object(o) if !o.is_empty() => {
            let mut set = fields_of_map(o);
            if GRANULAR_MAPS.contains(&field) {
                set.insert(".".into(), json!({}));
            }
            Value::Object(set)
        }
        Value::Array(items) => match keyed_items(field, items) {
            Some(keyed) if !keyed.is_empty() => Value::Object(
                keyed
                    .into_iter()
                    .map(|(k, item)| (k, item_whole(item)))
                    .collect(),
            ),
            _ => json!({}),
        },
        _ => json!({}),
    }
}

/// A new item of an associative list: `"."` and its fields.
fn item_whole(item: &Value) -> Value {
    let mut set = item.as_object().map(fields_of_map).unwrap_or_default();
    set.insert(".".into(), json!({}));
    Value::Object(set)
}

fn fields_of_map(o: &Map<String, Value>) -> Map<String, Value> {
    o.iter()
        .map(|(k, v)| (format!("f:{k}"), whole(k, v)))
        .collect()
}

/// The fields of `new` that differ from `old` (added or changed; removed ones are not
/// counted), as a FieldsV1 map.
fn diff_map(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut set = Map::new();
    for (k, nv) in new {
        let Some(ov) = old.get(k) else {
            set.insert(format!("f:{k}"), whole(k, nv));
            continue;
        };
        if ov == nv {
            continue;
        }
        let sub = match (ov, nv) {
            (Value::Object(o), Value::Object(n)) if !n.is_empty() => Value::Object(diff_map(o, n)),
            (Value::Array(o), Value::Array(n)) => match (keyed_items(k, o), keyed_items(k, n)) {
                (Some(o), Some(n)) if !n.is_empty() => {
                    let mut items = Map::new();
                    for (key, item) in n {
                        match o.iter().find(|(ok, _)| *ok == key) {
                            None => {
                                items.insert(key, item_whole(item));
                            }
                            Some((_, old_item)) if *old_item != item => {
                                let (Some(oi), Some(ni)) = (old_item.as_object(), item.as_object())
                                else {
                                    continue;
                                };
                                items.insert(key, Value::Object(diff_map(oi, ni)));
                            }
                            Some(_) => {}
                        }
                    }
                    Value::Object(items)
                }
                _ => json!({}),
            },
            _ => json!({}),
        };
        set.insert(format!("f:{k}"), sub);
    }
    set
}

/// `obj` without the fields no manager owns; without `status` when `status` is its own
/// subresource and this write is not to it, and with nothing but `status` when it is.
fn ownable(obj: &Value, status_apart: bool, subresource: &str) -> Map<String, Value> {
    let mut o = obj.as_object().cloned().unwrap_or_default();
    for k in STRIPPED {
        o.remove(*k);
    }
    if let Some(Value::Object(m)) = o.get_mut("metadata") {
        for k in STRIPPED_META {
            m.remove(*k);
        }
        if m.is_empty() {
            o.remove("metadata");
        }
    }
    if subresource == "status" {
        o.retain(|k, _| k == "status");
    } else if status_apart {
        o.remove("status");
    }
    o
}

/// The FieldsV1 set of everything `obj` sets (a create, or an apply's configuration).
pub fn fields_of(obj: &Value, status_apart: bool, subresource: &str) -> Value {
    Value::Object(fields_of_map(&ownable(obj, status_apart, subresource)))
}

/// The FieldsV1 set of what an update from `old` to `new` set.
pub fn changed_fields(old: &Value, new: &Value, status_apart: bool, subresource: &str) -> Value {
    Value::Object(diff_map(
        &ownable(old, status_apart, subresource),
        &ownable(new, status_apart, subresource),
    ))
}

/// Two FieldsV1 sets as one.
pub fn union(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut out = x.clone();
            for (k, v) in y {
                let merged = match out.get(k) {
                    Some(existing) => union(existing, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, b) => b.clone(),
    }
}

fn is_empty_set(v: &Value) -> bool {
    v.as_object().is_none_or(Map::is_empty)
}

/// A list a client sent decodes when every entry is an object with a string manager and
/// operation (what apimachinery's decoder needs).
fn decodes(entries: &[Value]) -> bool {
    entries.iter().all(|e| {
        e.is_object()
            && e["manager"].as_str().is_some()
            && e["operation"].as_str().is_some()
            && (e["fieldsV1"].is_null() || e["fieldsV1"].is_object())
    })
}

/// The entries a write starts from (apimachinery's `decodeLiveOrNew`).
fn base_entries(w: &Writer, live: Option<&Value>, sent: &Value) -> Vec<Value> {
    let live = live
        .and_then(|l| l["metadata"]["managedFields"].as_array())
        .cloned()
        .unwrap_or_default();
    // A subresource write cannot set managedFields.
    if !w.subresource.is_empty() {
        return live;
    }
    match sent["metadata"]["managedFields"].as_array() {
        Some(list) if list.len() == 1 && list[0] == json!({}) => Vec::new(),
        Some(list) if !list.is_empty() && decodes(list) => list.clone(),
        _ => live,
    }
}

fn same_key(e: &Value, w: &Writer) -> bool {
    e["manager"].as_str().unwrap_or("") == w.manager
        && e["operation"] == w.operation
        && e["apiVersion"] == w.api_version.as_str()
        && e["subresource"].as_str().unwrap_or("") == w.subresource
}

/// apimachinery's `sortEncodedManagedFields`: operation, time (seconds), manager,
/// apiVersion, subresource.
fn sort(entries: &mut [Value]) {
    let secs = |e: &Value| {
        e["time"]
            .as_str()
            .and_then(crate::lab::clock::parse_rfc3339_unix)
            .unwrap_or(0)
    };
    let s = |e: &Value, k: &str| e[k].as_str().unwrap_or("").to_owned();
    entries.sort_by(|p, q| {
        s(p, "operation")
            .cmp(&s(q, "operation"))
            .then(secs(p).cmp(&secs(q)))
            .then(s(p, "manager").cmp(&s(q, "manager")))
            .then(s(p, "apiVersion").cmp(&s(q, "apiVersion")))
            .then(s(p, "subresource").cmp(&s(q, "subresource")))
    });
}

/// Sets `new`'s managedFields for this write. `live` is the stored object (`None` on
/// create); `applied` is an Apply's configuration. A manager's `time` moves only when its
/// entry changes, so a write that changes nothing leaves the object as it was.
pub fn record(
    w: &Writer,
    live: Option<&Value>,
    new: &mut Value,
    applied: Option<&Value>,
    status_apart: bool,
) {
    let mut entries = base_entries(w, live, new);
    let fields = match (applied, live) {
        (Some(config), _) => fields_of(config, status_apart, &w.subresource),
        (None, Some(old)) => changed_fields(old, new, status_apart, &w.subresource),
        (None, None) => fields_of(new, status_apart, &w.subresource),
    };
    let existing = entries.iter().position(|e| same_key(e, w));
    let fields = match (applied, existing) {
        (Some(_), _) => fields,
        (None, Some(i)) if !is_empty_set(&fields) => union(&entries[i]["fieldsV1"], &fields),
        (None, Some(i)) => entries[i]["fieldsV1"].clone(),
        (None, None) => fields,
    };
    let mut entry = json!({
        "manager": w.manager,
        "operation": w.operation,
        "apiVersion": w.api_version,
        "time": w.time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    if !w.subresource.is_empty() {
        entry["subresource"] = json!(w.subresource);
    }
    // `manager` is omitempty: a client with neither fieldManager nor User-Agent has none.
    if w.manager.is_empty()
        && let Some(e) = entry.as_object_mut()
    {
        e.remove("manager");
    }
    match existing {
        Some(i) => {
            let old = &entries[i];
            let unchanged = old["fieldsV1"] == entry["fieldsV1"];
            // An Apply whose set did not change still changed the object when its
            // values did; an Update's set grows whenever it changed anything.
            let object_changed = live.is_some_and(|l| {
                !is_empty_set(&changed_fields(l, new, status_apart, &w.subresource))
            });
            if !unchanged || object_changed {
                entries[i] = entry;
            }
        }
        None if !is_empty_set(&entry["fieldsV1"]) => entries.push(entry),
        None => {}
    }
    sort(&mut entries);
    if let Some(m) = new["metadata"].as_object_mut() {
        if entries.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str, time: &str) -> Writer {
        Writer {
            manager: manager.into(),
            operation: "Update",
            api_version: "v1".into(),
            subresource: String::new(),
            time: time.into(),
        }
    }

    #[test]
    fn the_manager_is_the_field_manager_or_the_user_agent_product() {
        assert_eq!(
            manager_name(None, "kubectl/v1.28.2 (linux/amd64) kubernetes/abc"),
            "kubectl"
        );
        assert_eq!(
            manager_name(
                Some("kubectl-edit"),
                "kubectl/v1.28.2 (linux/amd64) kubernetes/abc"
            ),
            "kubectl-edit"
        );
        assert_eq!(
            manager_name(Some(""), "kubelet/v1.31.14 (linux/amd64) kubernetes/lab"),
            "kubelet"
        );
        assert_eq!(manager_name(None, "curl"), "curl");
        assert_eq!(manager_name(None, ""), "");
    }

    #[test]
    fn a_configmaps_fields_name_its_keys_and_labels_but_not_its_identity() {
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-proxy", "namespace": "kube-system", "uid": "u",
                         "resourceVersion": "7", "creationTimestamp": "t",
                         "labels": {"app": "kube-proxy"}},
            "data": {"config.conf": "x", "kubeconfig.conf": "y"},
        });
        assert_eq!(
            fields_of(&cm, false, ""),
            json!({
                "f:data": {".": {}, "f:config.conf": {}, "f:kubeconfig.conf": {}},
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            })
        );
    }

    #[test]
    fn an_update_sets_only_what_changed() {
        let old = json!({"metadata": {"name": "a"}, "data": {"k": "1", "j": "2"}});
        let new = json!({"metadata": {"name": "a"}, "data": {"k": "9", "j": "2", "n": "3"}});
        assert_eq!(
            changed_fields(&old, &new, false, ""),
            json!({"f:data": {"f:k": {}, "f:n": {}}})
        );
        assert_eq!(changed_fields(&old, &old, false, ""), json!({}));
    }

    #[test]
    fn keyed_lists_and_status() {
        let pod = json!({
            "metadata": {"name": "p", "ownerReferences": [{"uid": "u1", "kind": "DaemonSet"}]},
            "spec": {"containers": [{"name": "c", "image": "i", "command": ["a", "b"]}]},
            "status": {"phase": "Running"},
        });
        assert_eq!(
            fields_of(&pod, true, ""),
            json!({
                "f:metadata": {"f:ownerReferences": {"k:{\"uid\":\"u1\"}": {".": {}, "f:kind": {}, "f:uid": {}}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:command": {}, "f:image": {}, "f:name": {}}}},
            })
        );
        let mut running = pod.clone();
        running["status"] =
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        assert_eq!(
            changed_fields(&pod, &running, true, "status"),
            json!({"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
        );
    }

    #[test]
    fn entries_keep_other_managers_and_move_time_only_on_change() {
        let mut cm = json!({"metadata": {"name": "a"}, "data": {"k": "1"}});
        record(
            &writer("kubeadm", "2026-01-01T00:00:00Z"),
            None,
            &mut cm,
            None,
            false,
        );
        let created = cm.clone();
        let mut edited = created.clone();
        edited["data"]["k"] = json!("2");
        record(
            &writer("kubectl-edit", "2026-01-02T00:00:00Z"),
            Some(&created),
            &mut edited,
            None,
            false,
        );
        let mf = edited["metadata"]["managedFields"]
            .as_array()
            .expect("list");
        assert_eq!(mf.len(), 2);
        assert_eq!(
            (mf[0]["manager"].clone(), mf[0]["time"].clone()),
            (json!("kubeadm"), json!("2026-01-01T00:00:00Z"))
        );
        assert_eq!(
            mf[1],
            json!({"manager": "kubectl-edit", "operation": "Update", "apiVersion": "v1",
                   "time": "2026-01-02T00:00:00Z", "fieldsType": "FieldsV1",
                   "fieldsV1": {"f:data": {"f:k": {}}}})
        );
        // The same object again: nothing moves.
        let mut again = edited.clone();
        record(
            &writer("kubectl-edit", "2026-01-03T00:00:00Z"),
            Some(&edited),
            &mut again,
            None,
            false,
        );
        assert_eq!(again, edited);
    }

    #[test]
    fn what_a_client_sends_in_managed_fields() {
        let mut live = json!({"metadata": {"name": "a"}, "data": {"k": "1"}});
        record(
            &writer("kubeadm", "2026-01-01T00:00:00Z"),
            None,
            &mut live,
            None,
            false,
        );
        let w = writer("kubectl-replace", "2026-01-02T00:00:00Z");
        // Absent or `[]`: the stored list stays.
        for sent in [json!(null), json!([])] {
            let mut new = live.clone();
            new["metadata"]["managedFields"] = sent;
            record(&w, Some(&live), &mut new, None, false);
            assert_eq!(new, live);
        }
        // `[{}]` resets it: nothing is left when nothing changed.
        let mut new = live.clone();
        new["metadata"]["managedFields"] = json!([{}]);
        record(&w, Some(&live), &mut new, None, false);
        assert!(new["metadata"].get("managedFields").is_none());
        // A list that parses replaces it.
        let mut new = live.clone();
        let theirs = json!([{"manager": "helm", "operation": "Update", "apiVersion": "v1",
                             "time": "2020-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                             "fieldsV1": {"f:data": {}}}]);
        new["metadata"]["managedFields"] = theirs.clone();
        record(&w, Some(&live), &mut new, None, false);
        assert_eq!(new["metadata"]["managedFields"], theirs);
    }

    #[test]
    fn entries_sort_like_the_api_server() {
        let mut e = vec![
            json!({"manager": "b", "operation": "Update", "time": "2026-01-01T00:00:02Z"}),
            json!({"manager": "a", "operation": "Update", "time": "2026-01-01T00:00:02Z"}),
            json!({"manager": "z", "operation": "Update", "time": "2026-01-01T00:00:01Z"}),
            json!({"manager": "y", "operation": "Apply", "time": "2026-01-01T00:00:09Z"}),
        ];
        sort(&mut e);
        let order: Vec<&str> = e
            .iter()
            .map(|x| x["manager"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(order, ["y", "z", "a", "b"]);
    }
}
