//! Resolution of settings: defaults, checks, roles, layering.

use super::*;

fn anon() -> Settings {
    Settings {
        allow_anonymous: Some(true),
        ..Settings::default()
    }
}

#[test]
fn delivery_settings_are_checked_and_follow_presence() {
    let d = anon()
        .resolve(Role::Control)
        .expect("valid")
        .delivery
        .expect("on with presence");
    assert_eq!(d.resend_interval, Duration::from_secs(1));
    assert_eq!(d.inbox_max, 1000);
    let off = Settings {
        presence: Some(false),
        ..anon()
    };
    assert!(off
        .resolve(Role::Standalone)
        .expect("valid")
        .delivery
        .is_none());
    for (bad, msg) in [
        (
            Settings {
                delivery_resend_ms: Some(2000),
                delivery_max_resend_ms: Some(1000),
                ..anon()
            },
            "delivery-max-resend-ms",
        ),
        (
            Settings {
                delivery_inbox_max: Some(0),
                ..anon()
            },
            "delivery-inbox-max",
        ),
        (
            Settings {
                delivery_max_ttl_ms: Some(u64::from(u32::MAX) + 1),
                ..anon()
            },
            "delivery-max-ttl-ms",
        ),
    ] {
        let err = bad.resolve(Role::Standalone).err().expect("refused");
        assert!(err.to_string().contains(msg), "{err}");
    }
}

#[test]
fn defaults_resolve() {
    let r = anon().resolve(Role::Standalone).expect("valid");
    assert_eq!(r.listen.port(), 3000);
    assert_eq!(r.grpc_listen.port(), 50051);
    assert_eq!(r.edge.path, "/socket.io/");
    assert_eq!(r.edge.namespaces, vec!["/"]);
    assert_eq!(r.edge.ping_interval, Duration::from_secs(25));
}

#[test]
fn limits_have_safe_defaults_and_come_from_the_file() {
    let r = anon().resolve(Role::Standalone).expect("valid");
    assert_eq!(r.edge.max_request_headers, 64);
    assert_eq!(r.edge.max_request_head_bytes, 32 * 1024);
    assert_eq!(
        r.edge.max_connections_per_ip, 0,
        "off: proxies share an address"
    );
    assert_eq!(r.edge.handshakes_per_ip_per_sec, 0);
    assert_eq!(r.edge.max_rooms_per_socket, 1000);
    assert_eq!(r.edge.ws_pings_per_sec, 20);
    assert_eq!(r.edge.packets_per_sec, 1000);
    let file: Settings = toml::from_str(
        "allow_anonymous = true\nmax_connections_per_ip = 50\nhandshakes_per_ip_per_sec = 5\n\
         max_rooms_per_socket = 10\nws_pings_per_sec = 0\npackets_per_sec = 100\n\
         max_request_headers = 32\nmax_request_head_bytes = 8192\n",
    )
    .expect("valid toml");
    let r = file.resolve(Role::Edge).expect("valid");
    assert_eq!(
        (
            r.edge.max_connections_per_ip,
            r.edge.handshakes_per_ip_per_sec,
            r.edge.max_rooms_per_socket,
            r.edge.ws_pings_per_sec,
            r.edge.packets_per_sec,
            r.edge.max_request_headers,
            r.edge.max_request_head_bytes
        ),
        (50, 5, 10, 0, 100, 32, 8192)
    );
    let tiny = Settings {
        max_request_head_bytes: Some(100),
        ..anon()
    };
    assert!(tiny.resolve(Role::Standalone).is_err());
}

#[test]
fn client_port_deadlines_have_defaults_and_come_from_the_file() {
    let r = anon().resolve(Role::Standalone).expect("valid");
    assert_eq!(
        (
            r.edge.handshake_timeout,
            r.edge.request_head_timeout,
            r.edge.request_body_timeout,
            r.edge.max_pending_handshakes
        ),
        (
            Duration::from_secs(10),
            Duration::from_secs(10),
            Duration::from_secs(10),
            1024
        )
    );
    let file: Settings = toml::from_str(
        "allow_anonymous = true\nhandshake_timeout_ms = 300\nrequest_head_timeout_ms = 400\n\
         request_body_timeout_ms = 500\nmax_pending_handshakes = 7\n",
    )
    .expect("valid toml");
    let r = file.resolve(Role::Edge).expect("valid");
    assert_eq!(
        (
            r.edge.handshake_timeout,
            r.edge.request_head_timeout,
            r.edge.request_body_timeout,
            r.edge.max_pending_handshakes
        ),
        (
            Duration::from_millis(300),
            Duration::from_millis(400),
            Duration::from_millis(500),
            7
        )
    );
    for (bad, msg) in [
        (
            Settings {
                handshake_timeout_ms: Some(0),
                ..anon()
            },
            "handshake-timeout-ms",
        ),
        (
            Settings {
                request_head_timeout_ms: Some(0),
                ..anon()
            },
            "request-head-timeout-ms",
        ),
        (
            Settings {
                request_body_timeout_ms: Some(0),
                ..anon()
            },
            "request-body-timeout-ms",
        ),
        (
            Settings {
                max_pending_handshakes: Some(0),
                ..anon()
            },
            "max-pending-handshakes",
        ),
    ] {
        let err = bad.resolve(Role::Standalone).err().expect("refused");
        assert!(err.to_string().contains(msg), "{err}");
    }
}

#[test]
fn flags_override_file() {
    let file: Settings = toml::from_str(
        "listen = \"127.0.0.1:4000\"\nnamespaces = [\"/\", \"/admin\"]\nping_interval_ms = 100\nallow_anonymous = true\n",
    )
    .expect("valid toml");
    let flags = Settings {
        ping_interval_ms: Some(200),
        ..Settings::default()
    };
    let r = flags.or(file).resolve(Role::Standalone).expect("valid");
    assert_eq!(r.listen.port(), 4000);
    assert_eq!(r.edge.namespaces, vec!["/", "/admin"]);
    assert_eq!(r.edge.ping_interval, Duration::from_millis(200));
}

#[test]
fn example_file_in_deploy_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/standalone.toml");
    let r = Settings::from_file(&path)
        .expect("example parses")
        .resolve(Role::Standalone)
        .expect("example is valid");
    assert_eq!(r.edge.namespaces, vec!["/", "/admin"]);
}

#[test]
fn rejects_bad_settings() {
    assert!(
        toml::from_str::<Settings>("bogus = 1").is_err(),
        "unknown keys are errors"
    );
    let no_auth = Settings::default()
        .resolve(Role::Standalone)
        .err()
        .expect("refused");
    assert!(
        no_auth.to_string().contains("--allow-anonymous"),
        "{no_auth}"
    );
    let bad_ns = Settings {
        namespaces: vec!["admin".into()],
        ..anon()
    };
    assert!(bad_ns.resolve(Role::Standalone).is_err());
    let zero = Settings {
        ping_interval_ms: Some(0),
        ..anon()
    };
    assert!(zero.resolve(Role::Standalone).is_err());
    let short = Settings {
        jwt_secret: Some("short".into()),
        ..Settings::default()
    };
    assert!(short.resolve(Role::Standalone).is_err());
    let missing_key = Settings {
        jwt_public_key_file: Some("/nonexistent/key.pem".into()),
        ..Settings::default()
    };
    assert!(missing_key.resolve(Role::Standalone).is_err());
}

#[test]
fn admin_ui_needs_all_three_settings_and_a_bcrypt_hash() {
    // bcrypt of "secret" at cost 4.
    let hash = "$2a$04$FVIe9pxBnwXVIWcgM..4G.ShCL0DqTNEz/rU46YY83xM/4UJvU.zC";
    let admin = |ns: Option<&str>, user: Option<&str>, h: Option<&str>| {
        Settings {
            admin_ui_namespace: ns.map(Into::into),
            admin_ui_username: user.map(Into::into),
            admin_ui_password_hash: h.map(Into::into),
            ..anon()
        }
        .resolve(Role::Standalone)
    };
    assert!(admin(None, None, None)
        .expect("off")
        .edge
        .admin_ui
        .is_none());
    let on = admin(Some("/admin"), Some("ops"), Some(hash)).expect("valid");
    let config = on.edge.admin_ui.clone().expect("on");
    assert_eq!(config.namespace, "/admin");
    assert!(on.edge.has_namespace("/admin"));
    assert!(!format!("{config:?}").contains(hash), "debug redacts");
    assert!(admin(Some("/admin"), Some("ops"), None).is_err());
    assert!(admin(Some("/admin"), None, Some(hash)).is_err());
    assert!(admin(Some("/admin"), Some("ops"), Some("plain")).is_err());
    assert!(admin(Some("admin"), Some("ops"), Some(hash)).is_err());
    assert!(
        admin(Some("/"), Some("ops"), Some(hash)).is_err(),
        "a client namespace"
    );
    assert!(admin(Some("/admin"), Some(""), Some(hash)).is_err());

    let dir = std::env::temp_dir().join(format!("roomcast-admin-ui-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let with_dir = |role| {
        Settings {
            admin_ui_static_dir: Some(dir.clone()),
            ..anon()
        }
        .resolve(role)
    };
    assert!(with_dir(Role::Standalone).is_err(), "no index.html");
    std::fs::write(dir.join("index.html"), "<html></html>").expect("write");
    let ok = with_dir(Role::Standalone).expect("valid");
    assert_eq!(ok.admin_ui_static_dir.as_deref(), Some(dir.as_path()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn client_tls_and_echo_path_are_checked() {
    let half = Settings {
        tls_cert_file: Some("/nonexistent/cert.pem".into()),
        ..anon()
    };
    let err = half.resolve(Role::Standalone).err().expect("refused");
    assert!(err.to_string().contains("go together"), "{err}");
    let missing = Settings {
        tls_cert_file: Some("/nonexistent/cert.pem".into()),
        tls_key_file: Some("/nonexistent/key.pem".into()),
        ..anon()
    };
    let err = missing.resolve(Role::Standalone).err().expect("refused");
    assert!(format!("{err:#}").contains("cert.pem"), "{err:#}");
    assert!(anon()
        .resolve(Role::Standalone)
        .expect("valid")
        .client_tls
        .is_none());

    let echo = |p: &str| {
        Settings {
            ws_echo_path: Some(p.into()),
            ..anon()
        }
        .resolve(Role::Standalone)
    };
    assert_eq!(
        echo("/echo").expect("valid").edge.ws_echo_path.as_deref(),
        Some("/echo")
    );
    for bad in ["echo", "/socket.io/", "/socket.io", "/{x}", "/*rest"] {
        assert!(echo(bad).is_err(), "{bad}");
    }
    assert!(anon()
        .resolve(Role::Standalone)
        .expect("valid")
        .edge
        .ws_echo_path
        .is_none());
}

#[test]
fn roles_check_what_they_use() {
    let control = Settings::default()
        .resolve(Role::Control)
        .expect("a control plane has no client auth");
    assert!(control.auth.is_none());
    assert!(Settings::default().resolve(Role::Edge).is_err());
    let edge = Settings {
        nats_urls: vec!["nats://10.0.0.1:4222".into(), "nats://10.0.0.2:4222".into()],
        node_id: Some("edge-7".into()),
        ..anon()
    }
    .resolve(Role::Edge)
    .expect("valid");
    assert_eq!(edge.nats.urls.len(), 2);
    assert_eq!(edge.nats.name.as_deref(), Some("roomcast-edge-edge-7"));
    assert_eq!(edge.admin_listen.port(), 9464);
}

#[test]
fn a_connect_hook_replaces_jwt_and_anonymous_access() {
    let hook = Settings {
        connect_hook_url: Some("http://127.0.0.1:7000".into()),
        ..Settings::default()
    };
    let r = hook
        .clone()
        .resolve(Role::Edge)
        .expect("the hook authenticates");
    let cfg = r.edge.connect_hook.expect("hook configured");
    assert_eq!(cfg.timeout, Duration::from_secs(2));
    let both = Settings {
        allow_anonymous: Some(true),
        ..hook.clone()
    };
    assert!(both.resolve(Role::Edge).is_err());
    let bad = Settings {
        connect_hook_url: Some("127.0.0.1:7000".into()),
        ..Settings::default()
    };
    assert!(bad.resolve(Role::Edge).is_err());
}

#[test]
fn nats_settings_are_checked() {
    let half = Settings {
        nats_user: Some("u".into()),
        ..Settings::default()
    };
    let err = half.resolve(Role::Control).err().expect("refused");
    assert!(err.to_string().contains("nats-password"), "{err}");
    let missing = Settings {
        nats_creds_file: Some("/nonexistent/user.creds".into()),
        ..Settings::default()
    };
    let err = missing.resolve(Role::Control).err().expect("refused");
    assert!(err.to_string().contains("user.creds"), "{err}");
    let ttl = Settings {
        heartbeat_interval_ms: Some(1000),
        edge_ttl_ms: Some(1500),
        ..Settings::default()
    };
    assert!(ttl.resolve(Role::Control).is_err());
    let secret = Settings {
        nats_password: Some("hunter2".into()),
        nats_user: Some("u".into()),
        ..Settings::default()
    };
    let r = secret.resolve(Role::Control).expect("valid");
    assert!(
        !format!("{:?}", r.nats).contains("hunter2"),
        "debug redacts"
    );
}
