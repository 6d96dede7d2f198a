//! Conformance of the Kong Admin API emulator with Kong 3.4.2 (kong-admin-3.4.md §8 and §9):
//! exact statuses and bodies, over real HTTP.

use bytes::Bytes;
use nasiko_tests::http::HttpClient;
use nasiko_tests::kong::{Fault, KongEmulator, Options};
use serde_json::{json, Value};

struct K {
    emu: KongEmulator,
    http: HttpClient,
}

impl K {
    async fn new() -> K {
        K {
            emu: KongEmulator::start(Options::strict()).await.unwrap(),
            http: HttpClient::default(),
        }
    }
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{}", self.emu.admin_url(), path);
        self.http.json(method, &url, body.as_ref()).await.unwrap()
    }
    async fn raw(&self, method: &str, path: &str, ct: Option<&str>, body: &str) -> (u16, Value) {
        let url = format!("{}{}", self.emu.admin_url(), path);
        let h: Vec<(&str, &str)> = ct.map(|c| vec![("content-type", c)]).unwrap_or_default();
        let (s, _, b) = self
            .http
            .send(method, &url, &h, Bytes::from(body.to_string()))
            .await
            .unwrap();
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
    async fn service(&self, name: &str) -> Value {
        let (s, b) = self
            .call(
                "POST",
                "/services",
                Some(json!({"name": name, "host": "example.com"})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        b
    }
}

fn without_times(mut v: Value) -> Value {
    for k in ["id", "created_at", "updated_at"] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

#[tokio::test]
async fn a_service_gets_every_default_and_the_full_shape() {
    let k = K::new().await;
    let (s, b) = k
        .call("POST", "/services", Some(json!({"host": "example.com"})))
        .await;
    assert_eq!(s, 201);
    assert!(
        b["id"].as_str().unwrap().len() == 36
            && b["created_at"].is_i64()
            && b["updated_at"].is_i64()
    );
    assert_eq!(
        without_times(b),
        json!({"name":null,"protocol":"http","host":"example.com","port":80,"path":null,
               "connect_timeout":60000,"write_timeout":60000,"read_timeout":60000,"retries":5,
               "enabled":true,"tags":null,"client_certificate":null,"ca_certificates":null,
               "tls_verify":null,"tls_verify_depth":null})
    );
}

#[tokio::test]
async fn the_url_shorthand_is_split_and_never_echoed() {
    let k = K::new().await;
    let (s, b) = k
        .call(
            "POST",
            "/services",
            Some(json!({"name": "u", "url": "https://service.com/"})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(
        (
            b["protocol"].clone(),
            b["host"].clone(),
            b["port"].clone(),
            b["path"].clone()
        ),
        (json!("https"), json!("service.com"), json!(443), json!("/"))
    );
    assert!(b.get("url").is_none());
    // three successive PATCHes (10-services "updates with url")
    let cases = [
        (
            "http://example.test:443",
            "http",
            "example.test",
            443,
            Value::Null,
        ),
        (
            "https://example2.test:80/",
            "https",
            "example2.test",
            80,
            json!("/"),
        ),
        (
            "http://example2.test",
            "http",
            "example2.test",
            80,
            Value::Null,
        ),
    ];
    for (url, proto, host, port, path) in cases {
        let (s, b) = k
            .call("PATCH", "/services/u", Some(json!({"url": url})))
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["protocol"], json!(proto));
        assert_eq!(b["host"], json!(host));
        assert_eq!(b["port"], json!(port));
        assert_eq!(b["path"], path, "{url}");
        assert_eq!(b["connect_timeout"], json!(60000));
    }
}

#[tokio::test]
async fn invalid_service_input_gets_exact_schema_violations() {
    let k = K::new().await;
    let (s, b) = k
        .call("POST", "/services", Some(json!({"url": "invalid url"})))
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        json!({"code":2,"name":"schema violation",
        "message":"2 schema violations (host: required field missing; path: should start with: /)",
        "fields":{"host":"required field missing","path":"should start with: /"}})
    );
    let (s, b) = k.call("POST", "/services", Some(json!({}))).await;
    assert_eq!(
        (s, b),
        (
            400,
            json!({"code":2,"name":"schema violation",
        "message":"schema violation (host: required field missing)","fields":{"host":"required field missing"}})
        )
    );
    let (s, b) = k
        .call(
            "POST",
            "/services",
            Some(json!({"host": "x.com", "protocol": "foo"})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["fields"],
        json!({"protocol":"expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp"})
    );
    let (s, b) = k
        .call(
            "POST",
            "/services",
            Some(json!({"host": "x.com", "port": "80"})),
        )
        .await;
    assert_eq!(
        (s, b["fields"].clone()),
        (400, json!({"port": "expected an integer"}))
    );
    let (s, b) = k
        .call(
            "POST",
            "/services",
            Some(json!({"host": "x.com", "foo": 1})),
        )
        .await;
    assert_eq!(
        (s, b["message"].clone(), b["fields"].clone()),
        (
            400,
            json!("schema violation (foo: unknown field)"),
            json!({"foo": "unknown field"})
        )
    );
    let (s, b) = k
        .call(
            "POST",
            "/services",
            Some(json!({"host": "x.com", "name": "foo bar"})),
        )
        .await;
    assert_eq!((s, b["fields"]["name"].clone()), (400, json!("invalid value 'foo bar': the only accepted ascii characters are alphanumerics or ., -, _, and ~")));
    let (s, b) = k
        .call(
            "POST",
            "/services",
            Some(json!({"host": "x.com", "name": ""})),
        )
        .await;
    assert_eq!(
        (s, b["fields"]["name"].clone()),
        (400, json!("length must be at least 1"))
    );
    let (s, b) = k
        .call("POST", "/services", Some(json!({"host": "example.com:80"})))
        .await;
    assert_eq!(
        (s, b["fields"]["host"].clone()),
        (400, json!("must not have a port"))
    );
    let (s, _) = k
        .call(
            "POST",
            "/services",
            Some(json!({"host": "example_api.com."})),
        )
        .await;
    assert_eq!(s, 201, "underscores and a trailing dot are valid hosts");
    let (s, b) = k
        .call(
            "POST",
            "/services",
            Some(json!({"host": "x.com", "protocol": "tcp", "path": "/a"})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["fields"],
        json!({"@entity":["failed conditional validation given value of field 'protocol'"],"path":"value must be null"})
    );
}

#[tokio::test]
async fn empty_lists_and_size_propagation_in_next() {
    let k = K::new().await;
    assert_eq!(
        k.call("GET", "/services", None).await,
        (200, json!({"data": [], "next": null}))
    );
    for i in 0..10 {
        k.service(&format!("s{i}")).await;
    }
    let (s, b) = k.call("GET", "/services?size=3", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"].as_array().unwrap().len(), 3);
    let token = b["offset"].as_str().unwrap().to_string();
    let esc: String = token
        .bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect();
    assert_eq!(b["next"], json!(format!("/services?offset={esc}&size=3")));
    // walk every page via `next`; ids ascending, nothing missed
    let mut ids = Vec::new();
    let mut next = Some("/services?size=3".to_string());
    while let Some(p) = next {
        let (_, b) = k.call("GET", &p, None).await;
        ids.extend(
            b["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_string()),
        );
        next = b["next"].as_str().map(String::from);
        if next.is_none() {
            assert!(
                b.get("offset").is_none(),
                "offset is absent on the last page"
            );
        }
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 10);
    for (q, msg) in [
        ("size=0", "size must be an integer between 1 and 1000"),
        ("size=1001", "size must be an integer between 1 and 1000"),
        ("size=foo", "size must be a number"),
    ] {
        assert_eq!(
            k.call("GET", &format!("/services?{q}"), None).await,
            (400, json!({"code":9,"name":"invalid size","message":msg}))
        );
    }
    assert_eq!(
        k.call("GET", "/services?offset=!!!", None).await,
        (
            400,
            json!({"code":7,"name":"invalid offset","message":"'!!!' is not a valid offset: bad base64 encoding"})
        )
    );
    // unknown query args are ignored
    let (_, b) = k.call("GET", "/services?name=s1", None).await;
    assert_eq!(b["data"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn delete_is_204_even_when_missing_and_refused_while_routes_reference_the_service() {
    let k = K::new().await;
    assert_eq!(
        k.call(
            "DELETE",
            "/services/7a2c1f4e-0000-4000-8000-000000000000",
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(k.call("DELETE", "/services/not-there", None).await.0, 204);
    k.service("svc").await;
    let (s, _) = k
        .call(
            "POST",
            "/services/svc/routes",
            Some(json!({"name": "r", "paths": ["/x"]})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(
        k.call("DELETE", "/services/svc", None).await,
        (
            400,
            json!({"code":4,"name":"foreign key violation",
        "message":"an existing 'routes' entity references this 'services' entity","fields":{"@referenced_by":"routes"}})
        )
    );
    assert_eq!(k.call("DELETE", "/routes/r", None).await.0, 204);
    assert_eq!(k.call("DELETE", "/services/svc", None).await.0, 204);
    assert_eq!(
        k.call("GET", "/services/svc", None).await,
        (404, json!({"message": "Not found"}))
    );
}

#[tokio::test]
async fn duplicate_names_and_plugins_give_409_code_5() {
    let k = K::new().await;
    let svc = k.service("svc").await;
    let (s, b) = k
        .call(
            "POST",
            "/services",
            Some(json!({"name": "svc", "host": "a.com"})),
        )
        .await;
    assert_eq!(
        (s, b),
        (
            409,
            json!({"code":5,"name":"unique constraint violation",
        "message":"UNIQUE violation detected on '{name=\"svc\"}'","fields":{"name":"svc"}})
        )
    );
    let sid = svc["id"].as_str().unwrap();
    assert_eq!(
        k.call(
            "POST",
            "/services/svc/plugins",
            Some(json!({"name": "cors"}))
        )
        .await
        .0,
        201
    );
    let (s, b) = k
        .call(
            "POST",
            "/services/svc/plugins",
            Some(json!({"name": "cors"})),
        )
        .await;
    assert_eq!(
        (s, b),
        (
            409,
            json!({"code":5,"name":"unique constraint violation",
        "message": format!("UNIQUE violation detected on '{{consumer=null,name=\"cors\",route=null,service={{id=\"{sid}\"}}}}'"),
        "fields":{"consumer":null,"name":"cors","route":null,"service":{"id":sid}}})
        )
    );
    let (_, r) = k
        .call(
            "POST",
            "/routes",
            Some(json!({"name": "r", "paths": ["/r"], "service": {"name": "svc"}})),
        )
        .await;
    let rid = r["id"].as_str().unwrap();
    assert_eq!(
        k.call("POST", "/routes/r/plugins", Some(json!({"name": "cors"})))
            .await
            .0,
        201
    );
    let (s, b) = k
        .call("POST", "/routes/r/plugins", Some(json!({"name": "cors"})))
        .await;
    assert_eq!((s, b["message"].clone()), (409, json!(format!("UNIQUE violation detected on '{{consumer=null,name=\"cors\",route={{id=\"{rid}\"}},service=null}}'"))));
    // a duplicate primary key is 400 code 3, not 409
    let (s, b) = k
        .call(
            "POST",
            "/services",
            Some(json!({"id": sid, "host": "a.com"})),
        )
        .await;
    assert_eq!(
        (s, b),
        (
            400,
            json!({"code":3,"name":"primary key violation",
        "message": format!("primary key violation on key '{{id=\"{sid}\"}}'"),"fields":{"id":sid}})
        )
    );
}

#[tokio::test]
async fn route_input_errors_are_exact() {
    let k = K::new().await;
    assert_eq!(
        k.call("POST", "/routes", Some(json!({}))).await,
        (
            400,
            json!({"code":2,"name":"schema violation",
        "message":"schema violation (must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https')",
        "fields":{"@entity":["must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'"]}})
        )
    );
    let (s, b) = k
        .call("POST", "/routes", Some(json!({"protocols": ["http"]})))
        .await;
    assert_eq!(
        (s, b["fields"]["@entity"][0].clone()),
        (
            400,
            json!(
                "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"
            )
        )
    );
    let (s, b) = k
        .call(
            "POST",
            "/routes",
            Some(json!({"paths": ["/x"], "service": {"name": "non-existing"}})),
        )
        .await;
    assert_eq!(
        (s, b),
        (
            400,
            json!({"code":13,"name":"foreign keys unresolved",
        "message":"foreign key unresolved (service.name: the foreign key cannot be resolved with '{name=\"non-existing\"}' for an existing 'services' entity)",
        "fields":{"service":{"name":"the foreign key cannot be resolved with '{name=\"non-existing\"}' for an existing 'services' entity"}}})
        )
    );
    let (s, b) = k
        .call(
            "POST",
            "/routes",
            Some(json!({"paths": ["/x"], "service": {"protocol": "http"}})),
        )
        .await;
    assert_eq!(
        (s, b),
        (
            400,
            json!({"code":2,"name":"schema violation","message":"schema violation (service.id: missing primary key)",
        "fields":{"service":{"id":"missing primary key"}}})
        )
    );
    let unknown = "7a2c1f4e-0000-4000-8000-000000000000";
    let (s, b) = k
        .call(
            "POST",
            "/routes",
            Some(json!({"paths": ["/x"], "service": {"id": unknown}})),
        )
        .await;
    assert_eq!(
        (s, b),
        (
            400,
            json!({"code":4,"name":"foreign key violation",
        "message": format!("the foreign key '{{id=\"{unknown}\"}}' does not reference an existing 'services' entity."),
        "fields":{"service":{"id":unknown}}})
        )
    );
    let (s, b) = k
        .call("POST", "/routes", Some(json!({"paths": ["x", "/ok"]})))
        .await;
    assert_eq!(
        (s, b["message"].clone(), b["fields"].clone()),
        (
            400,
            json!(
                "schema violation (paths.1: should start with: / (fixed path) or ~/ (regex path))"
            ),
            json!({"paths": ["should start with: / (fixed path) or ~/ (regex path)", null]})
        )
    );
    let (s, b) = k
        .call("POST", "/routes", Some(json!({"methods": ["get"]})))
        .await;
    assert_eq!(
        (s, b["fields"]["methods"].clone()),
        (400, json!(["invalid value: get"]))
    );
    let (s, b) = k
        .call(
            "POST",
            "/routes",
            Some(json!({"paths": ["/x"], "regex_priority": "foobar"})),
        )
        .await;
    assert_eq!(
        (s, b["message"].clone()),
        (
            400,
            json!("schema violation (regex_priority: expected an integer)")
        )
    );
    let (s, b) = k
        .call(
            "POST",
            "/routes",
            Some(json!({"paths": ["/x"], "protocols": ["http", "tcp"]})),
        )
        .await;
    assert_eq!(
        (s, b["fields"]["protocols"].clone()),
        (
            400,
            json!("these sets are mutually exclusive: ('http', 'https'), ('tcp', 'tls', 'udp')")
        )
    );
}

#[tokio::test]
async fn put_is_a_full_replacement_that_answers_200() {
    let k = K::new().await;
    k.service("svc").await;
    let (s, created) = k
        .call(
            "PUT",
            "/routes/my-route",
            Some(json!({"paths": ["/a"], "service": {"name": "svc"}, "methods": ["GET"]})),
        )
        .await;
    assert_eq!(s, 200, "PUT creates with 200, never 201");
    assert_eq!(created["name"], json!("my-route"));
    assert!(created["service"]["id"].is_string());
    let (s, updated) = k
        .call(
            "PUT",
            "/routes/my-route",
            Some(json!({"paths": ["/b"], "name": "ignored"})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(updated["id"], created["id"], "the id is kept on update");
    assert_eq!(
        updated["name"],
        json!("my-route"),
        "the URL wins over the body name"
    );
    assert_eq!(updated["methods"], Value::Null, "omitted fields are reset");
    assert_eq!(
        updated["service"],
        Value::Null,
        "a PUT without service detaches the route"
    );
    let (s, b) = k.call("PUT", "/services/x", Some(json!({}))).await;
    assert_eq!(
        (s, b["fields"].clone()),
        (400, json!({"host": "required field missing"}))
    );
    // the route default shape
    assert_eq!(
        without_times(updated),
        json!({"name":"my-route","protocols":["http","https"],"methods":null,"hosts":null,
        "headers":null,"paths":["/b"],"snis":null,"sources":null,"destinations":null,"regex_priority":0,
        "strip_path":true,"path_handling":"v0","preserve_host":false,"request_buffering":true,
        "response_buffering":true,"https_redirect_status_code":426,"tags":null,"service":null})
    );
}

#[tokio::test]
async fn patch_merges_clears_with_null_and_reports_missing_entities() {
    let k = K::new().await;
    k.service("svc").await;
    k.call(
        "POST",
        "/routes",
        Some(json!({"name": "r", "paths": ["/a"], "methods": ["GET"], "service": {"name": "svc"}})),
    )
    .await;
    let (s, b) = k
        .call(
            "PATCH",
            "/routes/r",
            Some(json!({"methods": [], "hosts": ["a.com"]})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["methods"], json!([]), "[] stays []");
    assert_eq!(b["paths"], json!(["/a"]), "absent fields are kept");
    let (_, b) = k
        .call("PATCH", "/routes/r", Some(json!({"service": null})))
        .await;
    assert_eq!(b["service"], Value::Null);
    assert_eq!(
        k.call("PATCH", "/services/nope", Some(json!({"retries": 1})))
            .await,
        (
            404,
            json!({"code":6,"name":"not found",
        "message":"could not find the entity with '{name=\"nope\"}'","fields":{"name":"nope"}})
        )
    );
    let id = "7a2c1f4e-0000-4000-8000-000000000000";
    assert_eq!(
        k.call(
            "PATCH",
            &format!("/services/{id}"),
            Some(json!({"retries": 1}))
        )
        .await,
        (
            404,
            json!({"code":6,"name":"not found",
        "message": format!("could not find the entity with primary key '{{id=\"{id}\"}}'"),"fields":{"id":id}})
        )
    );
    // validation runs before the existence check
    assert_eq!(
        k.call("PATCH", "/services/nope", Some(json!({"port": "x"})))
            .await
            .0,
        400
    );
    assert_eq!(
        k.call(
            "PATCH",
            "/plugins/7a2c1f4e-0000-4000-8000-000000000001",
            Some(json!({"enabled": false}))
        )
        .await,
        (404, json!({"message": "Not found"}))
    );
}

#[tokio::test]
async fn names_in_paths_uuids_and_invalid_segments() {
    let k = K::new().await;
    let svc = k.service("svc").await;
    let id = svc["id"].as_str().unwrap();
    assert_eq!(
        k.call("GET", &format!("/services/{}", id.to_uppercase()), None)
            .await
            .0,
        200,
        "UUID match is case-insensitive"
    );
    assert_eq!(
        k.call("GET", "/services/foo%20bar", None).await,
        (
            400,
            json!({"code":10,"name":"invalid unique name",
        "message":"invalid value 'foo bar': the only accepted ascii characters are alphanumerics or ., -, _, and ~"})
        )
    );
    // an entity named like a UUID cannot be reached by name
    let uuid_name = "11111111-2222-4333-8444-555555555555";
    k.call(
        "POST",
        "/services",
        Some(json!({"name": uuid_name, "host": "a.com"})),
    )
    .await;
    assert_eq!(
        k.call("GET", &format!("/services/{uuid_name}"), None)
            .await
            .0,
        404
    );
    assert_eq!(k.call("GET", "/services/%E5%86%86", None).await.0, 404);
    k.call(
        "POST",
        "/services",
        Some(json!({"name": "円", "host": "a.com"})),
    )
    .await;
    assert_eq!(k.call("GET", "/services/%E5%86%86", None).await.0, 200);
    assert_eq!(
        k.call("GET", "/services/", None).await.0,
        200,
        "a trailing slash is tolerated"
    );
    assert_eq!(
        k.call("GET", "/non-existing", None).await,
        (404, json!({"message": "Not found"}))
    );
    assert_eq!(
        k.call("DELETE", "/routes", None).await,
        (405, json!({"message": "Method not allowed"}))
    );
    assert_eq!(k.call("PATCH", "/plugins", None).await.0, 405);
}

#[tokio::test]
async fn bodies_need_a_known_content_type_and_valid_json() {
    let k = K::new().await;
    assert_eq!(
        k.raw("POST", "/services", Some("application/json"), "{bad")
            .await,
        (400, json!({"message": "Cannot parse JSON body"}))
    );
    assert_eq!(
        k.raw("POST", "/services", Some("text/plain"), "host=x.com")
            .await
            .0,
        415
    );
    assert_eq!(k.raw("POST", "/services", None, "host=x.com").await.0, 415);
    let (s, b) = k
        .raw(
            "POST",
            "/services",
            Some("application/x-www-form-urlencoded"),
            "host=x.com&port=8080",
        )
        .await;
    assert_eq!(
        (s, b["port"].clone()),
        (201, json!(8080)),
        "form input is type-inferred"
    );
    assert_eq!(
        k.raw("GET", "/services", Some("application/json"), "{bad")
            .await
            .0,
        200,
        "a body on GET is ignored"
    );
}

#[tokio::test]
async fn plugins_default_their_config_cascade_and_check_names() {
    let k = K::new().await;
    k.service("svc").await;
    k.call(
        "POST",
        "/routes",
        Some(json!({"name": "r", "paths": ["/a"], "service": {"name": "svc"}})),
    )
    .await;
    let (s, p) = k
        .call(
            "POST",
            "/routes/r/plugins",
            Some(json!({"name": "cors", "config": {"origins": ["*"]}})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(
        p["config"],
        json!({"origins":["*"],"headers":null,"exposed_headers":null,
        "methods":["GET","HEAD","PUT","PATCH","POST","DELETE","OPTIONS","TRACE","CONNECT"],
        "max_age":null,"credentials":false,"preflight_continue":false})
    );
    assert_eq!(p["protocols"], json!(["grpc", "grpcs", "http", "https"]));
    assert_eq!(
        (
            p["instance_name"].clone(),
            p["consumer"].clone(),
            p["enabled"].clone()
        ),
        (Value::Null, Value::Null, json!(true))
    );
    let pid = p["id"].as_str().unwrap().to_string();
    // PATCH deep-merges config
    let (_, p2) = k
        .call(
            "PATCH",
            &format!("/plugins/{pid}"),
            Some(json!({"config": {"max_age": 3600}})),
        )
        .await;
    assert_eq!(
        (
            p2["config"]["origins"].clone(),
            p2["config"]["max_age"].clone()
        ),
        (json!(["*"]), json!(3600))
    );
    let (s, b) = k
        .call(
            "PATCH",
            &format!("/plugins/{pid}"),
            Some(json!({"config": "bar"})),
        )
        .await;
    assert_eq!(
        (s, b["message"].clone()),
        (400, json!("schema violation (config: expected a record)"))
    );
    let (s, b) = k
        .call("POST", "/plugins", Some(json!({"name": "foo"})))
        .await;
    assert_eq!(
        (s, b["fields"]["name"].clone()),
        (
            400,
            json!("plugin 'foo' not enabled; add it to the 'plugins' configuration property")
        )
    );
    let (s, b) = k.call("POST", "/plugins", Some(json!({}))).await;
    assert_eq!(
        (s, b["message"].clone()),
        (
            400,
            json!("schema violation (name: required field missing)")
        )
    );
    // only size/offset/tags are honoured: ?name= does not filter
    k.call(
        "POST",
        "/plugins",
        Some(json!({"name": "request-termination"})),
    )
    .await;
    let (_, l) = k.call("GET", "/plugins?name=cors", None).await;
    assert_eq!(l["data"].as_array().unwrap().len(), 2);
    // deleting the route cascades to its plugins
    k.call("DELETE", "/routes/r", None).await;
    assert_eq!(k.call("GET", &format!("/plugins/{pid}"), None).await.0, 404);
    let (_, l) = k.call("GET", "/plugins", None).await;
    assert_eq!(l["data"].as_array().unwrap().len(), 1);
    // service-scoped plugins cascade with the service
    k.call(
        "POST",
        "/services/svc/plugins",
        Some(json!({"name": "cors"})),
    )
    .await;
    k.call("DELETE", "/services/svc", None).await;
    let (_, l) = k.call("GET", "/plugins", None).await;
    assert_eq!(l["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn plugins_upsert_by_instance_name_and_validate_config() {
    let k = K::new().await;
    let (s, a) = k
        .call("PUT", "/plugins/my-cors", Some(json!({"name": "cors"})))
        .await;
    assert_eq!((s, a["instance_name"].clone()), (200, json!("my-cors")));
    let (s, b) = k
        .call(
            "PUT",
            "/plugins/my-cors",
            Some(json!({"name": "cors", "config": {"max_age": 5}})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        b["id"], a["id"],
        "the id is kept across PUTs by instance_name"
    );
    let (s, b) = k
        .call(
            "POST",
            "/plugins",
            Some(json!({"name": "request-termination", "config": {"status_code": 42}})),
        )
        .await;
    assert_eq!(
        (s, b["fields"]["config"]["status_code"].clone()),
        (400, json!("value should be between 100 and 599"))
    );
    let (s, b) = k
        .call(
            "POST",
            "/plugins",
            Some(json!({"name": "request-termination", "config": {"message": "x", "body": "y"}})),
        )
        .await;
    assert_eq!(
        (s, b["fields"]["config"]["@entity"].clone()),
        (
            400,
            json!(["message cannot be used with content_type or body"])
        )
    );
    let (_, t) = k
        .call(
            "POST",
            "/plugins",
            Some(json!({"name": "request-termination"})),
        )
        .await;
    assert_eq!(
        t["config"],
        json!({"status_code":503,"message":null,"content_type":null,"body":null,"echo":false,"trigger":null})
    );
}

#[tokio::test]
async fn tags_filter_with_and_or_but_not_on_nested_lists() {
    let k = K::new().await;
    for (n, tags) in [
        ("a", json!(["x", "y"])),
        ("b", json!(["x"])),
        ("c", json!(["z"])),
    ] {
        k.call(
            "POST",
            "/services",
            Some(json!({"name": n, "host": "h.com", "tags": tags})),
        )
        .await;
    }
    let names = |b: &Value| {
        let mut v: Vec<String> = b["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&k.call("GET", "/services?tags=x", None).await.1),
        ["a", "b"]
    );
    assert_eq!(
        names(&k.call("GET", "/services?tags=x,y", None).await.1),
        ["a"]
    );
    assert_eq!(
        names(&k.call("GET", "/services?tags=y/z", None).await.1),
        ["a", "c"]
    );
    assert_eq!(
        k.call("GET", "/services?tags=x,y/z", None).await,
        (
            400,
            json!({"code":11,"name":"invalid options",
        "message":"invalid option (tags: invalid filter syntax)","options":{"tags":"invalid filter syntax"}})
        )
    );
    let (_, b) = k.call("GET", "/services?tags=x&size=1", None).await;
    let next = b["next"].as_str().unwrap();
    assert!(
        next.starts_with("/services?offset=") && next.ends_with("&tags=x&size=1"),
        "{next}"
    );
    k.call(
        "POST",
        "/services/a/routes",
        Some(json!({"paths": ["/1"], "tags": ["q"]})),
    )
    .await;
    k.call("POST", "/services/a/routes", Some(json!({"paths": ["/2"]})))
        .await;
    let (_, b) = k.call("GET", "/services/a/routes?tags=q", None).await;
    assert_eq!(
        b["data"].as_array().unwrap().len(),
        2,
        "nested lists ignore tags"
    );
    let (s, b) = k
        .call(
            "POST",
            "/services",
            Some(json!({"host": "h.com", "tags": ["a,b"]})),
        )
        .await;
    assert_eq!((s, b["fields"]["tags"][0].clone()), (400, json!("invalid tag 'a,b': expected printable ascii (except `,` and `/`) or valid utf-8 sequences")));
}

#[tokio::test]
async fn nested_endpoints_scope_to_their_parent() {
    let k = K::new().await;
    k.service("s1").await;
    k.service("s2").await;
    assert_eq!(
        k.call("GET", "/services/none/routes", None).await,
        (404, json!({"message": "Not found"}))
    );
    assert_eq!(
        k.call(
            "POST",
            "/services/none/routes",
            Some(json!({"paths": ["/x"]}))
        )
        .await
        .0,
        404
    );
    let (_, r) = k
        .call(
            "POST",
            "/services/s1/routes",
            Some(json!({"name": "r1", "paths": ["/x"], "service": {"name": "s2"}})),
        )
        .await;
    let (_, s1) = k.call("GET", "/services/s1", None).await;
    assert_eq!(
        r["service"]["id"], s1["id"],
        "the URL's service wins over the body"
    );
    assert_eq!(k.call("GET", "/services/s2/routes/r1", None).await.0, 404);
    assert_eq!(k.call("GET", "/services/s1/routes/r1", None).await.0, 200);
    assert_eq!(
        k.call("GET", "/routes/r1/service", None).await.1["name"],
        json!("s1")
    );
    assert_eq!(
        k.call("DELETE", "/routes/r1/service", None).await,
        (405, json!({"message": "Method not allowed"}))
    );
    let (_, l) = k.call("GET", "/services/s2/routes", None).await;
    assert_eq!(l, json!({"data": [], "next": null}));
}

#[tokio::test]
async fn root_and_status_describe_the_node() {
    let k = K::new().await;
    let (s, b) = k.call("GET", "/", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        (b["tagline"].clone(), b["version"].clone()),
        (json!("Welcome to kong"), json!("3.4.2"))
    );
    assert!(b["plugins"]["available_on_server"]["nasiko-auth"].is_object());
    assert_eq!(b["plugins"]["enabled_in_cluster"], json!([]));
    assert_eq!(
        k.call("POST", "/", None).await,
        (405, json!({"message": "Method not allowed"}))
    );
    let (_, st) = k.call("GET", "/status", None).await;
    assert_eq!(st["database"], json!({"reachable": true}));
    assert!(st.get("configuration_hash").is_none());
    assert_eq!(
        k.call("GET", "/config", None).await,
        (
            400,
            json!({"message": "this endpoint is only available when Kong is configured to not use a database"})
        )
    );
    k.emu.set_available_plugins(vec!["cors".into()]);
    let (_, b) = k.call("GET", "/", None).await;
    assert!(b["plugins"]["available_on_server"]
        .get("nasiko-auth")
        .is_none());
}

#[tokio::test]
async fn the_proxy_routes_by_longest_prefix_strip_path_and_methods() {
    let k = K::new().await;
    // an upstream: the emulator's own admin API is a real HTTP server
    let up = k.emu.admin_addr;
    k.call(
        "POST",
        "/services",
        Some(json!({"name": "admin", "url": format!("http://{up}")})),
    )
    .await;
    k.call("POST", "/routes", Some(json!({"name": "wide", "paths": ["/gw"], "service": {"name": "admin"}, "strip_path": true}))).await;
    k.call(
        "POST",
        "/services",
        Some(json!({"name": "admin-status", "url": format!("http://{up}/status")})),
    )
    .await;
    k.call("POST", "/routes", Some(json!({"name": "narrow", "paths": ["/gw/deep"], "methods": ["GET"], "service": {"name": "admin-status"}}))).await;
    let http = HttpClient::default();
    let p = k.emu.proxy_url();
    let (s, b) = http
        .json("GET", &format!("{p}/gw/services"), None)
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(
        b["data"].as_array().unwrap().len(),
        2,
        "strip_path forwards /services"
    );
    let (s, b) = http
        .json("GET", &format!("{p}/gw/deep"), None)
        .await
        .unwrap();
    assert_eq!(
        (s, b["database"].clone()),
        (200, json!({"reachable": true})),
        "the longest prefix wins and the service path is used"
    );
    let (s, b) = http
        .json("POST", &format!("{p}/gw/deep"), None)
        .await
        .unwrap();
    assert_eq!(
        (s, b),
        (404, json!({"message": "Not found"})),
        "a POST falls back to the wide route: POST /deep on the admin API"
    );
    let (s, b) = http
        .json("GET", &format!("{p}/nothing"), None)
        .await
        .unwrap();
    assert_eq!(
        (s, b),
        (
            404,
            json!({"message": "no Route matched with those values"})
        )
    );
}

#[tokio::test]
async fn faults_refuse_fail_and_the_record_counts_requests() {
    let k = K::new().await;
    k.service("svc").await;
    k.call("GET", "/services", None).await;
    let rec = k.emu.requests();
    assert_eq!(rec.len(), 2);
    assert_eq!(
        (rec[0].method.as_str(), rec[0].path.as_str(), rec[0].status),
        ("POST", "/services", 201)
    );
    assert_eq!(rec.iter().filter(|r| r.is_write()).count(), 1);
    k.emu.set_fault(Fault::Error500);
    assert_eq!(
        k.call("GET", "/services", None).await,
        (500, json!({"message": "An unexpected error occurred"}))
    );
    k.emu.set_fault(Fault::Refuse);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let err = k
        .http
        .json("GET", &format!("{}/services", k.emu.admin_url()), None)
        .await;
    assert!(err.is_err(), "connections are refused: {err:?}");
    // the control endpoints stay reachable on the proxy listener
    let http = HttpClient::default();
    let (s, _) = http
        .json(
            "PUT",
            &format!("{}/__emulator/fault", k.emu.proxy_url()),
            Some(&json!({"mode": "none"})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    let mut ok = false;
    for _ in 0..50 {
        if let Ok((200, _)) = k
            .http
            .json("GET", &format!("{}/services", k.emu.admin_url()), None)
            .await
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "the admin listener comes back");
    let (s, b) = http
        .json(
            "GET",
            &format!("{}/__emulator/requests", k.emu.admin_url()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert!(b["requests"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| !r["path"].as_str().unwrap().starts_with("/__emulator")));
}

#[tokio::test]
async fn options_lists_the_allowed_methods_with_cors_headers() {
    let k = K::new().await;
    let (s, h, body) = k
        .http
        .send(
            "OPTIONS",
            &format!("{}/routes", k.emu.admin_url()),
            &[],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!((s, body.len()), (204, 0));
    assert_eq!(h["allow"], "GET, HEAD, OPTIONS, POST");
    assert_eq!(
        h["access-control-allow-methods"],
        "GET, HEAD, OPTIONS, POST"
    );
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["access-control-allow-headers"], "Content-Type");
    let (s, h, _) = k
        .http
        .send(
            "OPTIONS",
            &format!("{}/services/x", k.emu.admin_url()),
            &[],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        (s, h["allow"].to_str().unwrap()),
        (204, "DELETE, GET, HEAD, OPTIONS, PATCH, PUT")
    );
    let (s, _, _) = k
        .http
        .send(
            "OPTIONS",
            &format!("{}/nope", k.emu.admin_url()),
            &[],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(s, 404);
}

// ---- DB-less mode (kong-admin-3.4.md §7) ------------------------------------------------------

async fn dbless() -> K {
    K {
        emu: KongEmulator::start(Options {
            dbless: true,
            ..Options::default()
        })
        .await
        .unwrap(),
        http: HttpClient::default(),
    }
}

const DECL: &str = r#"{"_format_version":"3.0","services":[{"name":"svc","url":"http://example.com:81/x","routes":[{"name":"r1","paths":["/r1"]}],"plugins":[{"name":"cors"}]}],"routes":[{"name":"r2","service":"svc","paths":["/r2"]}],"consumers":[{"username":"alice"}]}"#;

#[tokio::test]
async fn dbless_reports_its_mode_and_a_zero_hash_until_a_config_is_loaded() {
    let k = dbless().await;
    let (_, root) = k.call("GET", "/", None).await;
    assert_eq!(root["configuration"]["database"], "off");
    let (_, st) = k.call("GET", "/status", None).await;
    assert!(st.get("database").is_none(), "{st}");
    assert_eq!(st["configuration_hash"], "0".repeat(32));
    // DB mode: the opposite, and /config is refused
    let db = K::new().await;
    let (_, st) = db.call("GET", "/status", None).await;
    assert_eq!(st["database"]["reachable"], true);
    assert!(st.get("configuration_hash").is_none());
    let (s, b) = db
        .raw("POST", "/config", Some("application/json"), DECL)
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (
            400,
            Some("this endpoint is only available when Kong is configured to not use a database")
        )
    );
}

#[tokio::test]
async fn post_config_loads_nested_entities_with_deterministic_ids_and_the_hash_check_answers_304() {
    let k = dbless().await;
    let form2 = json!({ "config": DECL });
    let (s, b) = k
        .call("POST", "/config?check_hash=1", Some(form2.clone()))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["services"].as_object().unwrap().len(), 1);
    assert_eq!(b["routes"].as_object().unwrap().len(), 2);
    assert_eq!(b["plugins"].as_object().unwrap().len(), 1);
    // reads work as in DB mode; nested entities point at their parent
    let (_, r1) = k.call("GET", "/routes/r1", None).await;
    let (_, svc) = k.call("GET", "/services/svc", None).await;
    assert_eq!(r1["service"]["id"], svc["id"]);
    assert_eq!(
        (
            svc["host"].as_str(),
            svc["port"].as_i64(),
            svc["path"].as_str()
        ),
        (Some("example.com"), Some(81), Some("/x"))
    );
    // the hash is the md5 of the raw string; the same string again is 304, nothing reloaded
    let (_, st) = k.call("GET", "/status", None).await;
    let hash = st["configuration_hash"].as_str().unwrap().to_string();
    assert_eq!(hash, format!("{:x}", md5::compute(DECL.as_bytes())));
    let (s, _) = k
        .call("POST", "/config?check_hash=1", Some(form2.clone()))
        .await;
    assert_eq!(s, 304);
    // without check_hash it loads again, and ids are the same (deterministic, from the names)
    let (s, _) = k.call("POST", "/config", Some(form2)).await;
    assert_eq!(s, 201);
    let (_, again) = k.call("GET", "/services/svc", None).await;
    assert_eq!(again["id"], svc["id"]);
    // form 1 (a table) has no raw string: never 304
    let table: Value = serde_json::from_str(DECL).unwrap();
    let (s, _) = k.call("POST", "/config?check_hash=1", Some(table)).await;
    assert_eq!(s, 201);
    // form 3: a raw YAML body
    let (s, b) = k
        .raw(
            "POST",
            "/config",
            Some("text/yaml"),
            "_format_version: '3.0'\nservices:\n- name: y\n  host: h\n",
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, _) = k.call("GET", "/services/svc", None).await;
    assert_eq!(s, 404, "a push replaces everything");
}

#[tokio::test]
async fn get_config_exports_what_was_loaded_flat_with_foreign_keys_as_ids() {
    let k = dbless().await;
    let (s, _) = k
        .call("POST", "/config", Some(json!({ "config": DECL })))
        .await;
    assert_eq!(s, 201);
    let (s, b) = k.call("GET", "/config", None).await;
    assert_eq!(s, 200);
    let doc: Value = serde_yaml_ng::from_str(b["config"].as_str().unwrap()).unwrap();
    assert_eq!(doc["_format_version"], "3.0");
    assert_eq!(doc["_transform"], false);
    let (_, svc) = k.call("GET", "/services/svc", None).await;
    let routes = doc["routes"].as_array().unwrap();
    assert!(routes.iter().all(|r| r["service"] == svc["id"]), "{doc}");
    assert_eq!(
        doc["consumers"][0]["username"], "alice",
        "kinds not modelled are kept"
    );
    // the export loads back as it is
    let (s, b) = k
        .call("POST", "/config", Some(json!({ "config": b["config"] })))
        .await;
    assert_eq!(s, 201, "{b}");
    let (_, again) = k.call("GET", "/services/svc", None).await;
    assert_eq!(again["id"], svc["id"]);
}

#[tokio::test]
async fn an_invalid_config_is_400_code_14_with_flattened_errors_and_changes_nothing() {
    let k = dbless().await;
    let (s, _) = k
        .call("POST", "/config", Some(json!({ "config": DECL })))
        .await;
    assert_eq!(s, 201);
    // phase 1, the schema: errors at each entity's index (and nothing of the later phases)
    let bad = r#"{"_format_version":"3.0","services":[{"name":"ok","host":"h"},{"name":"bad","port":70000},{"name":"ok","host":"h"}],"routes":[{"name":"x","service":"nope","paths":["/x"]}]}"#;
    let (s, b) = k
        .call(
            "POST",
            "/config?flatten_errors=1",
            Some(json!({ "config": bad })),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        (b["code"].as_i64(), b["name"].as_str()),
        (Some(14), Some("invalid declarative configuration"))
    );
    assert!(b["message"]
        .as_str()
        .unwrap()
        .starts_with("declarative config is invalid: "));
    let svcs = b["fields"]["services"].as_array().unwrap();
    assert_eq!(svcs.len(), 2, "{b}");
    assert!(svcs[0].is_null());
    assert_eq!(svcs[1]["host"], "required field missing");
    assert!(b["fields"].get("routes").is_none(), "{b}");
    let flat = b["flattened_errors"].as_array().unwrap();
    assert_eq!(flat.len(), 1, "{b}");
    assert!(flat.iter().any(|f| f["entity_type"] == "service"
        && f["entity_name"] == "bad"
        && f["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "field" && e["field"] == "host")));
    // phase 2, `validate_references`: a duplicate name is a message at its index, a reference to
    // nothing a list under the entity's name
    let bad = r#"{"_format_version":"3.0","services":[{"name":"ok","host":"h"},{"name":"ok","host":"h"}],"routes":[{"name":"x","service":"nope","paths":["/x"]}]}"#;
    let (s, b) = k
        .call("POST", "/config", Some(json!({ "config": bad })))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        b["fields"],
        json!({"services": [null, "uniqueness violation: 'services' entity with name set to 'ok' already declared"],
               "routes": {"x": ["invalid reference 'service: nope' (no such entry in 'services')"]}})
    );
    // nothing changed
    let (s, _) = k.call("GET", "/services/svc", None).await;
    assert_eq!(s, 200);
    // unparsable, and empty
    let (s, b) = k
        .raw("POST", "/config", Some("text/yaml"), "- just\n- a list\n")
        .await;
    assert_eq!((s, b["code"].as_i64()), (400, Some(14)));
    assert_eq!(
        b["fields"]["error"],
        "failed parsing declarative configuration: expected an object"
    );
    let (s, b) = k.raw("POST", "/config", None, "").await;
    assert_eq!(
        (s, b["message"].as_str()),
        (400, Some("expected a declarative configuration"))
    );
}

#[tokio::test]
async fn entity_writes_are_refused_without_a_database_as_kong_refuses_them() {
    let k = dbless().await;
    let (s, _) = k
        .call("POST", "/config", Some(json!({ "config": DECL })))
        .await;
    assert_eq!(s, 201);
    let (_, svc) = k.call("GET", "/services/svc", None).await;
    let id = svc["id"].as_str().unwrap();
    for (m, path, body, status, msg) in [
        (
            "POST",
            "/routes".to_string(),
            Some(json!({"paths": ["/z"]})),
            405,
            Some("cannot create 'routes' entities when not using a database"),
        ),
        (
            "PUT",
            "/services/svc".to_string(),
            Some(json!({"host": "h"})),
            405,
            Some("cannot create or update 'services' entities by 'name' when not using a database"),
        ),
        (
            "PUT",
            format!("/services/{id}"),
            Some(json!({"host": "h"})),
            405,
            Some("cannot create or update 'services' entities when not using a database"),
        ),
        (
            "PATCH",
            "/services/svc".to_string(),
            Some(json!({"host": "h"})),
            405,
            Some("cannot update 'services' entities by 'name' when not using a database"),
        ),
        (
            "DELETE",
            "/services/svc".to_string(),
            None,
            405,
            Some("cannot remove 'services' entities by 'name' when not using a database"),
        ),
        ("DELETE", "/services/missing".to_string(), None, 204, None),
        (
            "POST",
            "/services/svc/routes".to_string(),
            Some(json!({"paths": ["/z"]})),
            405,
            Some("cannot create 'routes' entities when not using a database"),
        ),
    ] {
        let (s, b) = k.call(m, &path, body).await;
        assert_eq!(s, status, "{m} {path}: {b}");
        if let Some(msg) = msg {
            assert_eq!(
                (b["code"].as_i64(), b["message"].as_str()),
                (Some(12), Some(msg)),
                "{m} {path}"
            );
        }
    }
    let (s, b) = k
        .call("PATCH", "/services/missing", Some(json!({"host": "h"})))
        .await;
    assert_eq!((s, b["code"].as_i64()), (404, Some(6)));
}

// ---- upstreams and targets (UPSTREAMS.md) ----

#[tokio::test]
async fn an_upstream_gets_every_default_and_its_name_must_be_a_hostname() {
    let k = K::new().await;
    let (s, b) = k
        .call("POST", "/upstreams", Some(json!({"name": "svc.test"})))
        .await;
    assert_eq!(s, 201, "{b}");
    assert!(b["created_at"].is_i64() && b["updated_at"].is_i64());
    for (f, v) in [
        ("algorithm", json!("round-robin")),
        ("hash_on", json!("none")),
        ("hash_fallback", json!("none")),
        ("hash_on_cookie_path", json!("/")),
        ("slots", json!(10000)),
        ("use_srv_name", json!(false)),
        ("tags", Value::Null),
        ("host_header", Value::Null),
        ("client_certificate", Value::Null),
    ] {
        assert_eq!(b[f], v, "{f}");
    }
    assert_eq!(b["healthchecks"]["threshold"], 0);
    assert_eq!(
        b["healthchecks"]["passive"]["unhealthy"],
        json!({"http_statuses": [429, 500, 503], "tcp_failures": 0, "timeouts": 0, "http_failures": 0})
    );
    assert_eq!(
        b["healthchecks"]["active"]["healthy"]["http_statuses"],
        json!([200, 302])
    );
    for (name, why) in [
        (
            "10.0.0.1",
            "Invalid name ('10.0.0.1'); no ip addresses allowed",
        ),
        (
            "svc.test:80",
            "Invalid name ('svc.test:80'); no port allowed",
        ),
        (
            "bad name",
            "Invalid name ('bad name'); must be a valid hostname",
        ),
    ] {
        let (s, b) = k
            .call("POST", "/upstreams", Some(json!({"name": name})))
            .await;
        assert_eq!(
            (s, b["fields"]["name"].clone()),
            (400, json!(why)),
            "{name}"
        );
    }
    let (s, b) = k
        .call("POST", "/upstreams", Some(json!({"name": "svc.test"})))
        .await;
    assert_eq!((s, b["code"].clone()), (409, json!(5)), "{b}");
    // a partial healthchecks record is filled from the defaults; PATCH merges into the stored one
    let (s, b) = k
        .call(
            "PUT",
            "/upstreams/checked",
            Some(json!({"healthchecks": {"passive": {"unhealthy": {"tcp_failures": 2}}}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["healthchecks"]["passive"]["unhealthy"]["tcp_failures"], 2);
    assert_eq!(
        b["healthchecks"]["passive"]["unhealthy"]["http_statuses"],
        json!([429, 500, 503])
    );
    let (_, b) = k
        .call(
            "PATCH",
            "/upstreams/checked",
            Some(json!({"healthchecks": {"active": {"healthy": {"interval": 5}}}})),
        )
        .await;
    assert_eq!(b["healthchecks"]["active"]["healthy"]["interval"], 5);
    assert_eq!(
        b["healthchecks"]["passive"]["unhealthy"]["tcp_failures"], 2,
        "kept"
    );
    for (hc, field) in [
        (
            json!({"passive": {"unhealthy": {"tcp_failures": 300}}}),
            "value should be between 0 and 255",
        ),
        (json!({"passive": {"nope": 1}}), "unknown field"),
    ] {
        let (s, b) = k
            .call(
                "POST",
                "/upstreams",
                Some(json!({"name": "x.test", "healthchecks": hc})),
            )
            .await;
        assert_eq!(s, 400, "{b}");
        assert!(b["message"].as_str().unwrap().contains(field), "{b}");
    }
}

#[tokio::test]
async fn targets_are_created_by_post_only_normalized_unique_per_upstream_and_cascade() {
    let k = K::new().await;
    let (_, u) = k
        .call("POST", "/upstreams", Some(json!({"name": "up.test"})))
        .await;
    let base = "/upstreams/up.test/targets";
    let (s, t) = k
        .call("POST", base, Some(json!({"target": "konghq.test"})))
        .await;
    assert_eq!(s, 201, "{t}");
    assert_eq!(
        (
            t["target"].clone(),
            t["weight"].clone(),
            t["upstream"].clone(),
            t["tags"].clone()
        ),
        (
            json!("konghq.test:8000"),
            json!(100),
            json!({"id": u["id"]}),
            Value::Null
        )
    );
    assert!(t["created_at"].is_f64(), "targets keep milliseconds: {t}");
    let (s, b) = k
        .call(
            "POST",
            base,
            Some(json!({"target": "konghq.test:8000", "weight": 5})),
        )
        .await;
    assert_eq!(
        (s, b["code"].clone()),
        (409, json!(5)),
        "POST never updates: {b}"
    );
    for (body, field, msg) in [
        (json!({"weight": 0}), "target", "required field missing"),
        (
            json!({"target": "some invalid host name"}),
            "target",
            "Invalid target; not a valid hostname or ip address",
        ),
        (
            json!({"target": "konghq.test", "weight": 65536}),
            "weight",
            "value should be between 0 and 65535",
        ),
    ] {
        let (s, b) = k.call("POST", base, Some(body.clone())).await;
        assert_eq!((s, b["fields"][field].clone()), (400, json!(msg)), "{body}");
    }
    // PUT and PATCH update an existing target (by address or id); neither creates one
    let (s, b) = k
        .call(
            "PUT",
            &format!("{base}/konghq.test:9"),
            Some(json!({"weight": 1})),
        )
        .await;
    assert_eq!((s, b), (404, json!({"message": "Not found"})));
    let (s, b) = k
        .call(
            "PATCH",
            &format!("{base}/konghq.test:8000"),
            Some(json!({"weight": 0})),
        )
        .await;
    assert_eq!(
        (s, b["weight"].clone(), b["id"].clone()),
        (200, json!(0), t["id"].clone())
    );
    let (s, b) = k
        .call("GET", &format!("{base}/konghq.test:8000"), None)
        .await;
    assert_eq!((s, b["weight"].clone()), (200, json!(0)));
    let (s, _) = k.call("GET", &format!("{base}/konghq.test"), None).await;
    assert_eq!(s, 404, "without its port (stored as :8000) it is not found");
    k.call("POST", base, Some(json!({"target": "10.0.0.9:5000"})))
        .await;
    let (_, list) = k.call("GET", base, None).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        2,
        "weight-0 targets are listed: {list}"
    );
    // the same address on another upstream is another target
    k.call("POST", "/upstreams", Some(json!({"name": "other.test"})))
        .await;
    let (s, _) = k
        .call(
            "POST",
            "/upstreams/other.test/targets",
            Some(json!({"target": "10.0.0.9:5000"})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, b) = k.call("GET", "/targets", None).await;
    assert_eq!(
        (s, b),
        (404, json!({"message": "Not found"})),
        "no top-level targets in 3.4"
    );
    for m in ["PUT", "PATCH", "DELETE"] {
        let (s, _) = k.call(m, base, Some(json!({"target": "x.test"}))).await;
        assert_eq!(s, 405, "{m} on the collection");
    }
    let (s, _) = k
        .call(
            "POST",
            "/upstreams/nope.test/targets",
            Some(json!({"target": "a.test"})),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = k
        .call("DELETE", &format!("{base}/10.0.0.9:5000"), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = k.call("GET", &format!("{base}/10.0.0.9:5000"), None).await;
    assert_eq!(s, 404);
    let (s, _) = k
        .call("GET", "/upstreams/other.test/targets/10.0.0.9:5000", None)
        .await;
    assert_eq!(s, 200, "the other upstream's is untouched");
    // deleting an upstream deletes its targets
    let (s, _) = k.call("DELETE", "/upstreams/up.test", None).await;
    assert_eq!(s, 204);
    assert!(k.emu.with_store(|st| st
        .find_target(u["id"].as_str().unwrap(), "konghq.test")
        .is_none()));
}

/// Which backend answered: each backend is an emulator whose `GET /` names its node id.
async fn node_of(http: &HttpClient, url: &str) -> (u16, String) {
    let (s, b) = http.json("GET", url, None).await.unwrap();
    (
        s,
        b["node_id"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| b.to_string()),
    )
}

#[tokio::test]
async fn the_proxy_balances_by_weight_retries_a_dead_peer_and_says_when_none_is_left() {
    let k = K::new().await;
    let a = KongEmulator::start(Options::strict()).await.unwrap();
    let b = KongEmulator::start(Options::strict()).await.unwrap();
    let node = |e: &KongEmulator| e.with_store(|s| s.node_id.clone());
    let (na, nb) = (node(&a), node(&b));
    k.call(
        "PUT",
        "/upstreams/balanced",
        Some(json!({"healthchecks": {"passive": {"unhealthy": {"tcp_failures": 1}}}})),
    )
    .await;
    for e in [&a, &b] {
        let (s, _) = k
            .call(
                "POST",
                "/upstreams/balanced/targets",
                Some(json!({"target": e.admin_addr.to_string()})),
            )
            .await;
        assert_eq!(s, 201);
    }
    k.call(
        "PUT",
        "/services/bal",
        Some(json!({"host": "balanced", "port": 80})),
    )
    .await;
    k.call(
        "PUT",
        "/routes/bal",
        Some(json!({"paths": ["/b"], "service": {"name": "bal"}})),
    )
    .await;
    let http = HttpClient::default();
    let url = format!("{}/b/", k.emu.proxy_url());
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..20 {
        let (s, n) = node_of(&http, &url).await;
        assert_eq!(s, 200);
        *seen.entry(n).or_insert(0) += 1;
    }
    assert_eq!(
        seen.get(&na),
        Some(&10),
        "equal weights alternate: {seen:?}"
    );
    assert_eq!(seen.get(&nb), Some(&10), "{seen:?}");
    // weight 0: no new requests
    k.call(
        "PATCH",
        &format!("/upstreams/balanced/targets/{}", b.admin_addr),
        Some(json!({"weight": 0})),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(node_of(&http, &url).await, (200, na.clone()));
    }
    // a peer that refuses connections: the try goes to another peer, and the passive check
    // (tcp_failures 1) takes it out of the rotation
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    k.call(
        "POST",
        "/upstreams/balanced/targets",
        Some(json!({"target": dead.to_string()})),
    )
    .await;
    for _ in 0..4 {
        assert_eq!(
            node_of(&http, &url).await,
            (200, na.clone()),
            "retried on a live peer"
        );
    }
    let (_, h) = k.call("GET", "/upstreams/balanced/health", None).await;
    let health: std::collections::BTreeMap<String, String> = h["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["target"].as_str().unwrap().to_string(),
                t["health"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(health[&dead.to_string()], "UNHEALTHY", "{h}");
    assert_eq!(health[&a.admin_addr.to_string()], "HEALTHY");
    assert_eq!(
        health[&b.admin_addr.to_string()],
        "HEALTHCHECKS_OFF",
        "weight 0"
    );
    // nothing left to pick
    k.call(
        "PATCH",
        &format!("/upstreams/balanced/targets/{}", a.admin_addr),
        Some(json!({"weight": 0})),
    )
    .await;
    let (s, body) = http.json("GET", &url, None).await.unwrap();
    assert_eq!(
        (s, body),
        (
            503,
            json!({"message": "failure to get a peer from the ring-balancer"})
        )
    );
}

#[tokio::test]
async fn an_unhealthy_target_comes_back_by_active_probes_or_by_hand() {
    let k = K::new().await;
    let a = KongEmulator::start(Options::strict()).await.unwrap();
    k.call(
        "PUT",
        "/upstreams/probed",
        Some(json!({"healthchecks": {"active": {"type": "tcp", "healthy": {"interval": 1, "successes": 1}}}})),
    )
    .await;
    let t = format!("/upstreams/probed/targets/{}", a.admin_addr);
    k.call(
        "POST",
        "/upstreams/probed/targets",
        Some(json!({"target": a.admin_addr.to_string()})),
    )
    .await;
    k.call("PUT", "/services/p", Some(json!({"host": "probed"})))
        .await;
    k.call(
        "PUT",
        "/routes/p",
        Some(json!({"paths": ["/p"], "service": {"name": "p"}})),
    )
    .await;
    let (s, _) = k.call("PUT", &format!("{t}/unhealthy"), None).await;
    assert_eq!(s, 204);
    let http = HttpClient::default();
    let url = format!("{}/p/", k.emu.proxy_url());
    assert_eq!(
        http.json("GET", &url, None).await.unwrap().0,
        503,
        "unhealthy: no peer"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if http.json("GET", &url, None).await.unwrap().0 == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the probe never brought it back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // by hand, on an upstream without active probes (a passive counter keeps its healthchecker)
    k.call(
        "PATCH",
        "/upstreams/probed",
        Some(
            json!({"healthchecks": {"active": {"healthy": {"interval": 0}}, "passive": {"unhealthy": {"tcp_failures": 3}}}}),
        ),
    )
    .await;
    k.call("PUT", &format!("{t}/unhealthy"), None).await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(
        http.json("GET", &url, None).await.unwrap().0,
        503,
        "nothing probes it now"
    );
    k.call("PUT", &format!("{t}/healthy"), None).await;
    assert_eq!(http.json("GET", &url, None).await.unwrap().0, 200);
}

#[tokio::test]
async fn dbless_loads_upstreams_with_nested_targets_exports_them_flat_and_refuses_target_writes() {
    let k = dbless().await;
    let a = KongEmulator::start(Options::strict()).await.unwrap();
    let decl = json!({"_format_version": "3.0",
        "upstreams": [{"name": "up", "tags": ["t"], "targets": [{"target": a.admin_addr.to_string()}]}],
        "targets": [{"upstream": "up", "target": "10.0.0.1:5000", "weight": 0}],
        "services": [{"name": "s", "host": "up", "routes": [{"name": "r", "paths": ["/u"]}]}]});
    let (s, b) = k.call("POST", "/config", Some(decl)).await;
    assert_eq!(s, 201, "{b}");
    let (s, _) = HttpClient::default()
        .json("GET", &format!("{}/u/", k.emu.proxy_url()), None)
        .await
        .unwrap();
    assert_eq!(s, 200, "balanced to the only target of weight > 0");
    let (_, cfg) = k.call("GET", "/config", None).await;
    let doc: Value = serde_yaml_ng::from_str(cfg["config"].as_str().unwrap()).unwrap();
    let uid = doc["upstreams"][0]["id"].as_str().unwrap().to_string();
    let targets = doc["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    assert!(
        targets.iter().all(|t| t["upstream"] == uid.as_str()),
        "foreign keys as ids: {doc:?}"
    );
    let (s, b) = k
        .call(
            "POST",
            "/upstreams/up/targets",
            Some(json!({"target": "10.0.0.2:5000"})),
        )
        .await;
    assert_eq!(
        (s, b["message"].clone()),
        (
            405,
            json!("cannot create 'targets' entities when not using a database")
        )
    );
    let bad =
        json!({"_format_version": "3.0", "targets": [{"upstream": "nope", "target": "a.test"}]});
    let (s, b) = k.call("POST", "/config?flatten_errors=1", Some(bad)).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("invalid reference 'upstream: nope'"),
        "{b}"
    );
}

#[tokio::test]
async fn tags_list_every_entity_with_a_tag_by_id_and_page() {
    let k = K::new().await;
    k.call(
        "PUT",
        "/services/s1",
        Some(json!({"host": "a.test", "tags": ["mine"]})),
    )
    .await;
    k.call(
        "PUT",
        "/services/s2",
        Some(json!({"host": "a.test", "tags": ["other"]})),
    )
    .await;
    k.call("PUT", "/upstreams/u1", Some(json!({"tags": ["mine", "x"]})))
        .await;
    let (s, t) = k
        .call(
            "POST",
            "/upstreams/u1/targets",
            Some(json!({"target": "a.test:1", "tags": ["mine"]})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, b) = k.call("GET", "/tags/mine", None).await;
    assert_eq!(s, 200);
    let mut kinds: Vec<&str> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["tag"], "mine");
            r["entity_name"].as_str().unwrap()
        })
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["services", "targets", "upstreams"]);
    assert!(b["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["entity_id"] == t["id"]));
    assert_eq!(b["next"], Value::Null);
    let (_, page) = k.call("GET", "/tags/mine?size=2", None).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    let (_, rest) = k.call("GET", page["next"].as_str().unwrap(), None).await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
}

// ---- Timing: when a write reaches the proxy (TIMING.md) -----------------------------------------

use nasiko_tests::kong::{Consistency, Timing};
use std::time::{Duration, Instant};

async fn with(opts: Options) -> K {
    K {
        emu: KongEmulator::start(opts).await.unwrap(),
        http: HttpClient::default(),
    }
}

impl K {
    /// A request through the proxy: its status and the plugins its `x-emulator-plugins` names.
    async fn proxied(&self, method: &str, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.emu.proxy_url());
        let (s, h, _) = self
            .http
            .send(method, &url, &[], Bytes::new())
            .await
            .unwrap();
        let names = h
            .get("x-emulator-plugins")
            .expect("every proxied response names its plugins")
            .to_str()
            .unwrap()
            .to_string();
        (s, names)
    }
    async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (s, b) = self.call(method, path, Some(body)).await;
        assert!(s == 200 || s == 201, "{method} {path}: {s} {b}");
        b
    }
    /// A service that proxies to the emulator's own Admin API (a real HTTP server), at `path`.
    async fn admin_service(&self, name: &str, path: &str) {
        let url = format!("http://{}{path}", self.emu.admin_addr);
        self.ok("POST", "/services", json!({"name": name, "url": url}))
            .await;
    }

    /// A route `name` with one path, on the service `service`.
    async fn route(&self, name: &str, path: &str, service: &str) {
        let body = json!({"name": name, "paths": [path], "service": {"name": service}});
        self.ok("POST", "/routes", body).await;
    }
}

#[tokio::test]
async fn root_reports_worker_consistency_and_its_frequency_kongs_defaults_first() {
    let k = with(Options::default()).await;
    let (_, b) = k.call("GET", "/", None).await;
    assert_eq!(b["configuration"]["worker_consistency"], "eventual");
    assert_eq!(b["configuration"]["worker_state_update_frequency"], 5);
    let k = with(Options {
        timing: Timing::eventual(Duration::from_millis(250)),
        ..Options::default()
    })
    .await;
    let (_, b) = k.call("GET", "/", None).await;
    assert_eq!(b["configuration"]["worker_consistency"], "eventual");
    assert_eq!(b["configuration"]["worker_state_update_frequency"], 0.25);
    let k = with(Options::strict()).await;
    let (_, b) = k.call("GET", "/", None).await;
    assert_eq!(b["configuration"]["worker_consistency"], "strict");
}

/// The binary reads Kong's settings from its environment and, as Kong, refuses to start on a bad
/// one.
#[tokio::test]
async fn the_binary_reads_kong_settings_from_the_environment_and_refuses_bad_ones() {
    let bin = env!("CARGO_BIN_EXE_kong-emulator");
    for (k, v, said) in [
        (
            "KONG_WORKER_CONSISTENCY",
            "sometimes",
            "worker_consistency has an invalid value: 'sometimes' (strict, eventual)",
        ),
        (
            "KONG_WORKER_STATE_UPDATE_FREQUENCY",
            "0",
            "worker_state_update_frequency must be greater than 0",
        ),
        (
            "KONG_WORKER_STATE_UPDATE_FREQUENCY",
            "often",
            "worker_state_update_frequency is not a number: 'often'",
        ),
    ] {
        let out = std::process::Command::new(bin)
            .env(k, v)
            .env("EMULATOR_ADMIN_LISTEN", "127.0.0.1:0")
            .env("EMULATOR_PROXY_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{k}={v}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(said), "{k}={v}: {err}");
    }
    // a good pair is taken and reported
    let mut child = tokio::process::Command::new(bin)
        .env("KONG_WORKER_CONSISTENCY", "strict")
        .env("KONG_WORKER_STATE_UPDATE_FREQUENCY", "0.5")
        .env("EMULATOR_ADMIN_LISTEN", "127.0.0.1:0")
        .env("EMULATOR_PROXY_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    tokio::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    let admin = line
        .split_whitespace()
        .skip_while(|w| *w != "admin")
        .nth(2)
        .unwrap()
        .trim_end_matches(',')
        .to_string();
    let (s, b) = HttpClient::default()
        .json("GET", &format!("{admin}/"), None)
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(b["configuration"]["worker_consistency"], "strict");
    assert_eq!(b["configuration"]["worker_state_update_frequency"], 0.5);
    child.kill().await.unwrap();
}

/// Kong's default timing in DB mode: the route reaches the proxy at the router's tick, and a
/// plugin written BEFORE it only at the plugins iterator's own tick — in between, requests go
/// through without it.
#[tokio::test]
async fn eventual_db_mode_routes_and_plugins_reach_the_proxy_each_at_its_own_timers_tick() {
    let f = Duration::from_secs(1);
    let started = Instant::now();
    let k = with(Options {
        timing: Timing::eventual(f),
        ..Options::default()
    })
    .await;
    k.admin_service("admin", "/status").await;
    k.ok(
        "POST",
        "/services/admin/plugins",
        json!({"name": "key-auth"}),
    )
    .await;
    k.route("r", "/gw", "admin").await;
    let written = started.elapsed();
    let first = k.proxied("GET", "/gw").await;
    if started.elapsed() < f - Duration::from_millis(100) {
        assert_eq!(
            first,
            (404, String::new()),
            "before the router's first tick the route is not in the proxy"
        );
    }
    // poll until the plugin is in: record what each response showed
    let mut seen: Vec<(u16, String)> = vec![first];
    let mut first_200: Option<Duration> = None;
    while seen.last().unwrap() != &(200, "key-auth".to_string()) {
        assert!(started.elapsed() < f * 4, "not in after 4 ticks: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let o = k.proxied("GET", "/gw").await;
        if o.0 == 200 && first_200.is_none() {
            first_200 = Some(started.elapsed());
        }
        if seen.last() != Some(&o) {
            seen.push(o);
        }
    }
    assert!(
        first_200.unwrap() >= f,
        "the route came before the router's first tick ({:?}, written by {written:?})",
        first_200
    );
    // both written before the router's first tick (at f): the route is in at f, the plugin at
    // the plugins iterator's first tick (1.5 f), and requests in between go without it
    if written < f {
        assert_eq!(
            seen[seen.len() - 2..],
            [(200, String::new()), (200, "key-auth".to_string())],
            "the route reaches the proxy before the plugin written earlier: {seen:?}"
        );
    }
}

/// Under strict, a write is in the proxy from the next request on: routes, plugins and their
/// removal.
#[tokio::test]
async fn strict_db_mode_a_write_is_in_the_proxy_on_the_next_request() {
    let k = with(Options {
        timing: Timing {
            consistency: Consistency::Strict,
            frequency: Duration::from_secs(3600),
        },
        ..Options::default()
    })
    .await;
    k.admin_service("admin", "/status").await;
    let p = k
        .ok(
            "POST",
            "/services/admin/plugins",
            json!({"name": "key-auth"}),
        )
        .await;
    k.route("r", "/gw", "admin").await;
    assert_eq!(k.proxied("GET", "/gw").await, (200, "key-auth".into()));
    let (s, _) = k
        .call(
            "DELETE",
            &format!("/plugins/{}", p["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(k.proxied("GET", "/gw").await, (200, String::new()));
    let (s, _) = k.call("DELETE", "/routes/r", None).await;
    assert_eq!(s, 204);
    assert_eq!(k.proxied("GET", "/gw").await, (404, String::new()));
}

/// Upstreams and targets go through worker events (`kong/runloop/events.lua`): in the balancer at
/// once, whatever the router's timing.
#[tokio::test]
async fn eventual_db_mode_targets_take_effect_at_once() {
    let f = Duration::from_millis(300);
    let k = with(Options {
        timing: Timing::eventual(f),
        ..Options::default()
    })
    .await;
    k.ok("POST", "/upstreams", json!({"name": "up.internal"}))
        .await;
    k.ok(
        "POST",
        "/services",
        json!({"name": "s", "host": "up.internal", "path": "/status"}),
    )
    .await;
    k.route("r", "/gw", "s").await;
    let t0 = Instant::now();
    while k.proxied("GET", "/gw").await.0 != 503 {
        assert!(t0.elapsed() < f * 10, "the route never reached the proxy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let target = k.emu.admin_addr.to_string();
    let t = k
        .ok(
            "POST",
            "/upstreams/up.internal/targets",
            json!({"target": target}),
        )
        .await;
    assert_eq!(k.proxied("GET", "/gw").await.0, 200, "the target at once");
    k.ok(
        "PATCH",
        &format!(
            "/upstreams/up.internal/targets/{}",
            t["id"].as_str().unwrap()
        ),
        json!({"weight": 0}),
    )
    .await;
    assert_eq!(k.proxied("GET", "/gw").await.0, 503, "weight 0 at once");
}

/// Without a database, `POST /config` rebuilds the router and the plugins iterator at once
/// (`reconfigure_handler`), whatever `worker_consistency` says.
#[tokio::test]
async fn dbless_post_config_is_in_the_proxy_at_once() {
    let k = with(Options {
        dbless: true,
        ..Options::default()
    })
    .await;
    let url = format!("http://{}/status", k.emu.admin_addr);
    let cfg = |plugins: Value| {
        json!({"_format_version": "3.0", "services": [{"name": "s", "url": url,
               "routes": [{"name": "r", "paths": ["/gw"]}], "plugins": plugins}]})
    };
    let (s, _) = k
        .call("POST", "/config", Some(cfg(json!([{"name": "key-auth"}]))))
        .await;
    assert_eq!(s, 201);
    assert_eq!(k.proxied("GET", "/gw").await, (200, "key-auth".into()));
    let (s, _) = k.call("POST", "/config", Some(cfg(json!([])))).await;
    assert_eq!(s, 201);
    assert_eq!(k.proxied("GET", "/gw").await, (200, String::new()));
    let (s, _) = k
        .call("POST", "/config", Some(json!({"_format_version": "3.0"})))
        .await;
    assert_eq!(s, 201);
    assert_eq!(k.proxied("GET", "/gw").await, (404, String::new()));
}

/// `x-emulator-plugins` names what Kong's plugins iterator runs: global plugins everywhere (on a
/// 404 too: the rewrite phase runs them before the router), service- and route-scoped ones for
/// their own, never a disabled one or one scoped to a consumer (none is identified).
#[tokio::test]
async fn the_plugins_header_names_what_the_plugins_iterator_runs() {
    let k = with(Options::strict()).await;
    k.admin_service("a", "/status").await;
    k.admin_service("b", "/status").await;
    k.route("ra", "/a", "a").await;
    k.route("rb", "/b", "b").await;
    k.ok("POST", "/plugins", json!({"name": "cors"})).await;
    k.ok("POST", "/routes/ra/plugins", json!({"name": "key-auth"}))
        .await;
    k.ok(
        "POST",
        "/services/b/plugins",
        json!({"name": "request-termination", "enabled": false}),
    )
    .await;
    assert_eq!(k.proxied("GET", "/a").await, (200, "cors,key-auth".into()));
    assert_eq!(k.proxied("GET", "/b").await, (200, "cors".into()));
    assert_eq!(k.proxied("GET", "/none").await, (404, "cors".into()));
}

// ---- Regex paths (traditional_compatible, TIMING.md §Router) ------------------------------------

/// `~` paths are regexes anchored at the start: they end an agent's path at a segment boundary,
/// and outrank every prefix path (the regex bit of `get_priority`); `regex_priority` orders
/// regexes; `strip_path` strips what the regex matched.
#[tokio::test]
async fn regex_paths_match_at_a_segment_boundary_and_outrank_prefix_paths() {
    let k = with(Options::strict()).await;
    k.admin_service("root", "").await;
    k.admin_service("status", "/status").await;
    k.route("peer-2", "~/agents/agent-peer-2(/|$)", "root")
        .await;
    // the Admin API's root answers a tagline; /status a database
    let (s, b) = k
        .http
        .json(
            "GET",
            &format!("{}/agents/agent-peer-2", k.emu.proxy_url()),
            None,
        )
        .await
        .unwrap();
    assert_eq!((s, b["tagline"].clone()), (200, json!("Welcome to kong")));
    let (s, b) = k
        .http
        .json(
            "GET",
            &format!("{}/agents/agent-peer-2/status", k.emu.proxy_url()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (s, b["database"].clone()),
        (200, json!({"reachable": true})),
        "strip_path strips what the regex matched"
    );
    assert_eq!(
        k.proxied("GET", "/agents/agent-peer-21/x").await.0,
        404,
        "no match past the segment boundary"
    );
    assert_eq!(k.proxied("GET", "/x/agents/agent-peer-2").await.0, 404);
    // a longer prefix path loses to the regex
    k.ok(
        "POST",
        "/routes",
        json!({"name": "long-prefix", "paths": ["/agents/agent-peer-2/status/deeper"], "service": {"name": "status"}, "strip_path": false}),
    )
    .await;
    let (_, b) = k
        .http
        .json(
            "GET",
            &format!("{}/agents/agent-peer-2/status/deeper", k.emu.proxy_url()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        b["message"], "Not found",
        "the regex route won: /status/deeper on the Admin API, not the status service"
    );
    // between regexes, regex_priority
    k.ok(
        "POST",
        "/routes",
        json!({"name": "peer-2-status", "paths": ["~/agents/agent-peer-2/status"], "service": {"name": "status"}, "regex_priority": 5}),
    )
    .await;
    let (_, b) = k
        .http
        .json(
            "GET",
            &format!("{}/agents/agent-peer-2/status", k.emu.proxy_url()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        b["database"],
        json!({"reachable": true}),
        "regex_priority 5 wins over 0"
    );
    // a route with methods set outranks paths alone, regex or not
    k.ok(
        "POST",
        "/routes",
        json!({"name": "by-method", "paths": ["/agents"], "methods": ["DELETE"], "service": {"name": "status"}}),
    )
    .await;
    let (s, _) = k
        .http
        .json(
            "DELETE",
            &format!("{}/agents/agent-peer-2", k.emu.proxy_url()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        s, 404,
        "the methods route won: DELETE /status/agent-peer-2 on the Admin API (the regex route \
         would have sent DELETE /, a 405)"
    );
}

/// What a regex path must be (`typedefs.router_path`, `validate_path_with_regexes`).
#[tokio::test]
async fn regex_paths_are_validated_as_kong_validates_them() {
    let k = with(Options::strict()).await;
    for (path, err) in [
        (
            "~agents",
            "should start with: / (fixed path) or ~/ (regex path)",
        ),
        ("~/a//b", "must not have empty segments"),
        ("~/a%zz", "invalid url-encoded value: '%zz'"),
    ] {
        let (s, b) = k
            .call("POST", "/routes", Some(json!({"paths": [path]})))
            .await;
        assert_eq!(s, 400, "{path}: {b}");
        assert_eq!(b["fields"]["paths"], json!([err]), "{path}");
    }
    let (s, b) = k
        .call(
            "POST",
            "/routes",
            Some(json!({"paths": ["~/agents/agent-x(/|$)", "/plain"]})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

// ---- What the hidden Kong probes check (issue 22 item 5, UPSTREAMS.md) --------------------------

/// `page_for_upstream` lists newest first with a plain index as offset; `select_by_upstream_filter`
/// compares the segment with the stored `host:port`; `post_health` needs a healthchecker.
#[tokio::test]
async fn targets_list_newest_first_need_their_port_and_health_by_hand_needs_checks() {
    let k = K::new().await;
    k.ok("POST", "/upstreams", json!({"name": "u.test"})).await;
    let mut made = Vec::new();
    for i in 1..=3 {
        let t = k
            .ok(
                "POST",
                "/upstreams/u.test/targets",
                json!({"target": format!("10.0.0.{i}:80")}),
            )
            .await;
        made.push(t["target"].as_str().unwrap().to_string());
        // created_at has milliseconds: keep them apart
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (s, b) = k.call("GET", "/upstreams/u.test/targets", None).await;
    assert_eq!(s, 200);
    let listed: Vec<&str> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["10.0.0.3:80", "10.0.0.2:80", "10.0.0.1:80"]);
    let (_, p1) = k
        .call("GET", "/upstreams/u.test/targets?size=2", None)
        .await;
    assert_eq!(p1["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        (p1["offset"].clone(), p1["next"].clone()),
        (json!("2"), json!("/upstreams/u.test/targets?offset=2"))
    );
    let (_, p2) = k.call("GET", p1["next"].as_str().unwrap(), None).await;
    assert_eq!(p2["data"][0]["target"], "10.0.0.1:80");
    assert_eq!(p2["next"], Value::Null);
    // looked up without its port: 404, even when the port is Kong's default
    k.ok(
        "POST",
        "/upstreams/u.test/targets",
        json!({"target": "10.0.0.9"}),
    )
    .await;
    for seg in ["10.0.0.1", "10.0.0.9"] {
        let (s, b) = k
            .call("GET", &format!("/upstreams/u.test/targets/{seg}"), None)
            .await;
        assert_eq!((s, b), (404, json!({"message": "Not found"})), "{seg}");
    }
    let (s, _) = k
        .call("GET", "/upstreams/u.test/targets/10.0.0.9:8000", None)
        .await;
    assert_eq!(s, 200);
    // health by hand on an upstream that checks nothing
    let (s, b) = k
        .call(
            "PUT",
            "/upstreams/u.test/targets/10.0.0.1:80/unhealthy",
            None,
        )
        .await;
    assert_eq!(
        (s, b),
        (400, json!({"message": "no healthchecker found for u.test"}))
    );
    k.ok(
        "PATCH",
        "/upstreams/u.test",
        json!({"healthchecks": {"passive": {"unhealthy": {"timeouts": 2}}}}),
    )
    .await;
    let (s, _) = k
        .call(
            "PUT",
            "/upstreams/u.test/targets/10.0.0.1:80/unhealthy",
            None,
        )
        .await;
    assert_eq!(s, 204);
}

/// DB-less consumers (`consumers.lua`, `declarative_config.lua`): loaded and returned keyed by id,
/// readable afterwards by id or username, `username` and `custom_id` unique, each error where
/// Kong puts it.
#[tokio::test]
async fn dbless_consumers_are_loaded_keyed_by_id_readable_and_unique() {
    let k = dbless().await;
    let cfg = json!({"_format_version": "3.0",
        "consumers": [{"username": "alice", "custom_id": "a1", "tags": ["t"]}, {"username": "bob"}],
        "plugins": [{"name": "key-auth", "consumer": "alice"}]});
    let (s, b) = k.call("POST", "/config", Some(cfg)).await;
    assert_eq!(s, 201, "{b}");
    let consumers = b["consumers"].as_object().unwrap();
    assert_eq!(consumers.len(), 2);
    let (id, alice) = consumers
        .iter()
        .find(|(_, c)| c["username"] == "alice")
        .unwrap();
    assert_eq!(alice["id"], json!(id), "keyed by id");
    assert_eq!(
        (alice["custom_id"].clone(), alice["tags"].clone()),
        (json!("a1"), json!(["t"]))
    );
    assert!(alice["created_at"].is_i64());
    let plugin = b["plugins"].as_object().unwrap().values().next().unwrap();
    assert_eq!(plugin["consumer"], json!({ "id": id }));
    // readable afterwards
    let (s, one) = k.call("GET", "/consumers/alice", None).await;
    assert_eq!((s, one["id"].clone()), (200, json!(id)));
    let (s, one) = k.call("GET", &format!("/consumers/{id}"), None).await;
    assert_eq!((s, one["username"].clone()), (200, json!("alice")));
    let (s, all) = k.call("GET", "/consumers", None).await;
    assert_eq!((s, all["data"].as_array().unwrap().len()), (200, 2));
    let (s, b) = k
        .call("POST", "/consumers", Some(json!({"username": "carol"})))
        .await;
    assert_eq!(
        (s, b["message"].clone()),
        (
            405,
            json!("cannot create 'consumers' entities when not using a database")
        )
    );
    // the endpoint key twice: a message at the second one's index
    let (s, b) = k
        .call(
            "POST",
            "/config",
            Some(json!({"_format_version": "3.0",
                        "consumers": [{"username": "alice"}, {"username": "alice"}]})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["fields"],
        json!({"consumers": [null, "uniqueness violation: 'consumers' entity with username set to 'alice' already declared"]})
    );
    // custom_id twice: under the entity's username (`flatten`'s unique fields)
    let (s, b) = k
        .call(
            "POST",
            "/config",
            Some(json!({"_format_version": "3.0",
                        "consumers": [{"username": "alice", "custom_id": "x"}, {"username": "bob", "custom_id": "x"}]})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["fields"],
        json!({"consumers": {"bob": "uniqueness violation: 'consumers' entity with custom_id set to 'x' already declared"}})
    );
    // neither username nor custom_id
    let (s, b) = k
        .call(
            "POST",
            "/config",
            Some(json!({"_format_version": "3.0", "consumers": [{"tags": ["t"]}]})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["fields"]["consumers"][0]["@entity"],
        json!(["at least one of these fields must be non-empty: 'custom_id', 'username'"])
    );
    // a failed load changed nothing
    let (s, _) = k.call("GET", "/consumers/bob", None).await;
    assert_eq!(s, 200);
}

/// Messages read in `kong/db/schema/init.lua` (`Schema.validators`) and the entity schemas:
/// `one_of` on an integer, `between` per array element.
#[tokio::test]
async fn integer_one_of_and_per_element_between_read_as_kong_writes_them() {
    let k = K::new().await;
    let (s, b) = k
        .call(
            "POST",
            "/routes",
            Some(json!({"paths": ["/x"], "https_redirect_status_code": 300})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["fields"],
        json!({"https_redirect_status_code": "expected one of: 426, 301, 302, 307, 308"})
    );
    let (s, _) = k
        .call(
            "POST",
            "/routes",
            Some(json!({"paths": ["/x"], "https_redirect_status_code": 308})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, b) = k
        .call(
            "POST",
            "/upstreams",
            Some(json!({"name": "u.test", "healthchecks": {"active": {"healthy": {"http_statuses": [200, 1000, "x"]}}}})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["fields"]["healthchecks"]["active"]["healthy"]["http_statuses"],
        json!([
            null,
            "value should be between 100 and 999",
            "expected an integer"
        ])
    );
    // `schema_violation` writes a field's sub-table whole with `pl.pretty.write`
    assert_eq!(
        b["message"],
        "schema violation (healthchecks.active: {\n  healthy = {\n    http_statuses = {\n      \
         [2] = \"value should be between 100 and 999\",\n      [3] = \"expected an integer\"\n    \
         }\n  }\n})"
    );
}

/// `POST /config` swaps the router and the plugins iterator together (`reconfigure_handler`): while
/// configurations alternate, no request meets a route of one with the plugins of the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbless_post_config_swaps_router_and_plugins_together() {
    let k = std::sync::Arc::new(
        with(Options {
            dbless: true,
            ..Options::default()
        })
        .await,
    );
    let url = format!("http://{}/status", k.emu.admin_addr);
    let cfg = |name: &str, plugin: &str| {
        json!({"_format_version": "3.0", "services": [{"name": name, "url": url,
               "routes": [{"name": name, "paths": [format!("/{name}")]}],
               "plugins": [{"name": plugin}]}]})
    };
    let (a, b) = (cfg("a", "key-auth"), cfg("b", "cors"));
    let (s, _) = k.call("POST", "/config", Some(a.clone())).await;
    assert_eq!(s, 201);
    let poller = {
        let k = k.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            for i in 0..400 {
                let path = if i % 2 == 0 { "/a" } else { "/b" };
                let (s, names) = k.proxied("GET", path).await;
                if s == 200 {
                    seen += 1;
                    let want = if path == "/a" { "key-auth" } else { "cors" };
                    assert_eq!(names, want, "{path} with another load's plugins");
                }
            }
            seen
        })
    };
    for i in 0..100 {
        let c = if i % 2 == 0 { &b } else { &a };
        let (s, _) = k.call("POST", "/config", Some(c.clone())).await;
        assert_eq!(s, 201);
    }
    let seen = poller.await.unwrap();
    assert!(seen > 0, "no request went through");
}

/// The upstream path (`get_upstream_uri_v0`, `kong/router/utils.lua`), read in the Admin API's own
/// request record (the emulator's Admin API is the upstream here).
#[tokio::test]
async fn the_upstream_path_is_built_as_kongs_v0_for_prefix_and_regex_paths() {
    let k = with(Options::strict()).await;
    k.admin_service("slash", "/up/").await;
    k.admin_service("bare", "/up").await;
    k.route("p", "/p", "slash").await;
    k.route("r", "~/r(/|$)", "bare").await;
    for (path, upstream) in [
        ("/p", "/up"),
        ("/p/", "/up/"),
        ("/p/x", "/up/x"),
        ("/r", "/up"),
        ("/r/", "/up/"),
        ("/r/x", "/up/x"),
    ] {
        k.emu.clear_requests();
        let (s, _) = k.proxied("GET", path).await;
        assert_eq!(s, 404, "{path}: the Admin API has no /up");
        let got: Vec<String> = k.emu.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(got, [upstream], "{path}");
    }
}
