//! The deployment files, validated without a Docker engine or a cluster: docker-compose.yml
//! (every service, image, port, volume, secret and mounted path), the Dockerfile (the README's
//! build steps, sources that exist), deploy/k8s/sluice.yaml (objects that refer to each other
//! correctly), and the pipeline each of them runs passes `sluice validate` with the
//! environment it sets.
mod common;

use serde_norway::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn repo(path: &str) -> std::path::PathBuf {
    common::repo_root().join(path)
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    let mut value: Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    value.apply_merge().unwrap();
    value
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_mapping()
        .map(|m| m.keys().map(text).collect())
        .unwrap_or_default()
}

/// `sluice validate PIPELINE` with `env`, plugins from this checkout.
fn validate(pipeline: &Path, env: &[(String, String)]) -> std::process::Output {
    let mut env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    env.retain(|(k, _)| *k != "SLUICE_PLUGIN_DIR");
    env.push(("SLUICE_PLUGIN_DIR", common::plugin_dir()));
    common::sluice(&["validate", pipeline.to_str().unwrap()], &env)
}

#[test]
fn docker_compose_services_ports_volumes_and_mounts_are_consistent() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    let names = keys(services);
    for wanted in [
        "kafka",
        "schema-registry",
        "namenode",
        "datanode",
        "clickhouse",
        "prometheus",
        "grafana",
        "metabase",
        "postgres",
        "sluice",
        "generator",
    ] {
        assert!(names.contains(wanted), "no service {wanted}");
    }
    let volumes = keys(&compose["volumes"]);
    let mut used_volumes = BTreeSet::new();
    for name in &names {
        let service = &services[name.as_str()];
        let image = service["image"].as_str().unwrap_or_default();
        assert!(
            image.contains(':'),
            "{name}: an image with a pinned tag, got `{image}`"
        );
        if let Some(build) = service.get("build") {
            assert!(
                repo(&text(build)).join("Dockerfile").is_file(),
                "{name}: build context without a Dockerfile"
            );
        }
        let one_shot = service.get("restart").map(text).as_deref() == Some("no");
        assert!(
            one_shot || service["healthcheck"]["test"].is_sequence(),
            "{name}: no health check"
        );
        for port in service["ports"].as_sequence().into_iter().flatten() {
            assert!(
                text(port).starts_with("127.0.0.1:"),
                "{name}: port {port:?} is published beyond loopback"
            );
        }
        for mount in service["volumes"].as_sequence().into_iter().flatten() {
            let mount = text(mount);
            let source = mount.split(':').next().unwrap();
            if let Some(path) = source.strip_prefix("./") {
                assert!(
                    repo(path).exists(),
                    "{name}: mounts ./{path}, which is missing"
                );
            } else {
                assert!(
                    volumes.contains(source),
                    "{name}: volume {source} is not declared"
                );
                used_volumes.insert(source.to_string());
            }
        }
        let depends = match &service["depends_on"] {
            Value::Sequence(list) => list.iter().map(text).collect(),
            other => keys(other),
        };
        for dependency in depends {
            assert!(
                names.contains(&dependency),
                "{name}: depends on {dependency}"
            );
        }
    }
    assert_eq!(used_volumes, volumes, "declared volumes nobody mounts");

    // Prometheus scrapes the host's admin port through the compose network, with the token.
    let prometheus = yaml("deploy/prometheus.yml");
    let job = &prometheus["scrape_configs"][0];
    assert_eq!(text(&job["static_configs"][0]["targets"][0]), "sluice:9464");
    assert_eq!(
        text(&job["authorization"]["credentials_file"]),
        "/tmp/admin_token"
    );
    assert!(
        text(&services["prometheus"]["entrypoint"][2]).contains("> /tmp/admin_token"),
        "the prometheus entrypoint does not write the token file"
    );
    for rule_file in prometheus["rule_files"].as_sequence().unwrap() {
        let mounted = format!("/etc/prometheus/{}", text(rule_file));
        assert!(
            services["prometheus"]["volumes"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|m| text(m).contains(&mounted)),
            "{mounted} is not mounted"
        );
    }
    // Grafana gets the dashboards folder its provisioning file points at.
    let provider = yaml("deploy/grafana/provisioning/dashboards/sluice.yml");
    let path = text(&provider["providers"][0]["options"]["path"]);
    assert!(
        services["grafana"]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|m| text(m).starts_with(&format!("./dashboards:{path}"))),
        "grafana does not mount dashboards/ at {path}"
    );

    // The host's pipeline validates with the environment compose gives it (service names as
    // hosts, the admin API beyond loopback with its token) ...
    let mut env: Vec<(String, String)> = services["sluice"]["environment"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (text(k), text(v)))
        .collect();
    for (_, value) in &mut env {
        // Compose's own ${VAR:?message} has to be set by the user; give it a value here.
        if value.starts_with("${SLUICE_ADMIN_TOKEN:?") {
            *value = "a-token".into();
        }
    }
    let command: Vec<String> = services["sluice"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    let pipeline = command[1].replace("/pipelines/", "pipelines/");
    common::assert_success(&validate(&repo(&pipeline), &env));
    // ... and not without the token: the admin API would be open to the network.
    env.retain(|(k, _)| k != "SLUICE_ADMIN_TOKEN");
    let output = validate(&repo(&pipeline), &env);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("admin.listen"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The generator's flags are ones `sluice gen` takes.
    let help = common::assert_success(&common::sluice(&["gen", "--help"], &[]));
    for arg in services["generator"]["command"].as_sequence().unwrap() {
        let arg = text(arg);
        if arg.starts_with("--") {
            assert!(help.contains(&arg), "`sluice gen` has no {arg}:\n{help}");
        }
    }
}

/// Debian's docker-compose (installed by scripts/test.sh) parses the file as Compose does,
/// interpolation included; no engine is needed for `config`.
#[test]
fn docker_compose_config_accepts_the_file() {
    let run = |env: &[(&str, &str)]| {
        std::process::Command::new("docker-compose")
            .args(["-f", "docker-compose.yml", "config", "-q"])
            .current_dir(common::repo_root())
            .env_remove("SLUICE_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .output()
            .expect("docker-compose (Debian package docker-compose; scripts/test.sh installs it)")
    };
    let output = run(&[("SLUICE_ADMIN_TOKEN", "a-token")]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Without the token compose refuses to start the stack, saying which variable is missing.
    let output = run(&[]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("SLUICE_ADMIN_TOKEN"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_dockerfile_builds_with_the_readme_steps_from_sources_that_exist() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let quickstart = std::fs::read_to_string(repo("scripts/quickstart.sh")).unwrap();
    for step in [
        "bash scripts/setup.sh",
        "bash scripts/build-plugins.sh",
        "cargo build",
    ] {
        assert!(
            dockerfile.contains(step),
            "the Dockerfile does not run `{step}`"
        );
        assert!(
            quickstart.contains(step),
            "the quickstart does not run `{step}`"
        );
    }
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.iter().any(|p| p.starts_with("--from")) {
            continue;
        }
        let source = parts[1];
        assert!(repo(source).exists(), "COPY {source}: missing");
    }
    let cmd = dockerfile
        .lines()
        .find(|l| l.starts_with("CMD "))
        .expect("a CMD");
    assert!(
        cmd.contains("/pipelines/streamify.yaml") && repo("pipelines/streamify.yaml").is_file()
    );
    assert!(dockerfile.contains("http://127.0.0.1:9464/health"));
}

#[test]
fn kubernetes_objects_refer_to_each_other_and_run_the_repository_pipeline() {
    let text_all = std::fs::read_to_string(repo("deploy/k8s/sluice.yaml")).unwrap();
    let documents: Vec<Value> = serde_norway::Deserializer::from_str(&text_all)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let find = |kind: &str| {
        documents
            .iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let config_map = find("ConfigMap");
    let deployment = find("Deployment");
    let service = find("Service");
    let claim = find("PersistentVolumeClaim");

    // The ConfigMap carries the repository's pipeline, unchanged.
    let pipeline_text = text(&config_map["data"]["streamify.yaml"]);
    assert_eq!(
        pipeline_text,
        std::fs::read_to_string(repo("pipelines/streamify.yaml")).unwrap(),
        "deploy/k8s/sluice.yaml's ConfigMap differs from pipelines/streamify.yaml"
    );

    let spec = &deployment["spec"];
    assert!(spec["replicas"].as_u64().unwrap() >= 2);
    let labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(&spec["selector"]["matchLabels"], labels);
    assert_eq!(&service["spec"]["selector"], labels);
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    let ports: BTreeSet<String> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| text(&p["name"]))
        .collect();
    assert_eq!(
        text(&container["readinessProbe"]["httpGet"]["path"]),
        "/ready"
    );
    assert_eq!(
        text(&container["livenessProbe"]["httpGet"]["path"]),
        "/health"
    );
    for port in [
        &container["readinessProbe"]["httpGet"]["port"],
        &container["livenessProbe"]["httpGet"]["port"],
        &service["spec"]["ports"][0]["targetPort"],
    ] {
        assert!(
            ports.contains(&text(port)),
            "port {port:?} is not a container port"
        );
    }
    let volumes: BTreeSet<String> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| text(&v["name"]))
        .collect();
    for mount in container["volumeMounts"].as_sequence().unwrap() {
        assert!(volumes.contains(&text(&mount["name"])), "{mount:?}");
    }
    let volume = |name: &str| {
        pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap()
            .clone()
    };
    assert_eq!(
        volume("pipeline")["configMap"]["name"],
        config_map["metadata"]["name"]
    );
    assert_eq!(
        volume("plugins")["persistentVolumeClaim"]["claimName"],
        claim["metadata"]["name"]
    );
    // The container runs the ConfigMap's file where it is mounted.
    let config_mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"].as_str() == Some("pipeline"))
        .unwrap();
    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert_eq!(
        args[1],
        format!("{}/streamify.yaml", text(&config_mount["mountPath"]))
    );

    // Every replica is an instance of its own in one consumer group, and the pipeline
    // validates with the Deployment's environment (secrets stand in as placeholders).
    let env: Vec<(String, String)> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            let value = match e.get("value") {
                Some(v) => text(v),
                None => format!("from-{}", text(&e["name"]).to_lowercase()),
            };
            (text(&e["name"]), value)
        })
        .collect();
    let instance = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some("SLUICE_INSTANCE"))
        .unwrap();
    assert_eq!(
        text(&instance["valueFrom"]["fieldRef"]["fieldPath"]),
        "metadata.name"
    );
    assert!(pipeline_text.contains("${SLUICE_INSTANCE"));
    assert!(pipeline_text.contains("${SLUICE_GROUP"));
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("streamify.yaml");
    std::fs::write(&pipeline, pipeline_text).unwrap();
    common::assert_success(&validate(&pipeline, &env));
}
