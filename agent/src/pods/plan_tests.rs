//! Tests of `plan` over pod manifests.
use super::*;

fn ctx() -> PodContext {
    PodContext {
        node_name: "node-1".into(),
        pod_ip: Some("10.244.1.5".parse().unwrap()),
        agent_exe: "/usr/bin/skiff-agent".into(),
        service_account_automount: None,
    }
}

fn pod(yaml: &str) -> Pod {
    serde_yaml::from_str(yaml).unwrap()
}

const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, uid: u-1}
spec:
  terminationGracePeriodSeconds: 5
  restartPolicy: OnFailure
  volumes:
  - {name: cache, emptyDir: {}}
  - {name: cfg, configMap: {name: x}}
  initContainers:
  - name: setup
    image: busybox
    command: [sh, -c, "echo $(POD) > /cache/who"]
    env: [{name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
    volumeMounts: [{name: cache, mountPath: /cache}]
  containers:
  - name: web
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: [netexec, "--http-port=$(PORT)"]
    env:
    - {name: PORT, value: "8080"}
    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: URL, value: "http://$(IP):$(PORT)"}
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 2}
    livenessProbe: {tcpSocket: {port: 8080}, initialDelaySeconds: 3, failureThreshold: 5}
    resources: {limits: {memory: 64Mi, cpu: 250m}}
    volumeMounts: [{name: cache, mountPath: /cache, readOnly: true}]
  - name: side
    image: agnhost
    command: [/agnhost, serve-hostname]
  - name: sleeper
    image: registry.k8s.io/pause:3.10
  - name: custom
    image: example.com/tool:1
  - name: bad-volume
    image: busybox
    command: [sleep, "1"]
    volumeMounts: [{name: cfg, mountPath: /cfg}]
"#;

fn find<'a>(p: &'a RuntimePlan, name: &str) -> &'a ContainerPlan {
    p.all_containers().find(|c| c.name == name).unwrap()
}

fn argv(c: &ContainerPlan) -> Vec<&str> {
    match &c.exec {
        Exec::Run { argv } => argv.iter().map(String::as_str).collect(),
        other => panic!("{} is not runnable: {other:?}", c.name),
    }
}

fn env_of<'a>(c: &'a ContainerPlan, k: &str) -> Option<&'a str> {
    c.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

#[test]
fn pod_level_fields() {
    let p = plan(&pod(WEB), &ctx()).unwrap();
    assert_eq!(
        (p.uid.as_str(), p.namespace.as_str(), p.hostname.as_str()),
        ("u-1", "shop", "web-0")
    );
    assert_eq!(p.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(p.grace, Duration::from_secs(5));
    assert_eq!(p.volumes.get("cache"), Some(&VolumeSource::EmptyDir));
    assert_eq!(p.init_containers.len(), 1);
    assert_eq!(p.containers.len(), 5);
}

#[test]
fn images_map_to_builtins_or_host_commands() {
    let p = plan(&pod(WEB), &ctx()).unwrap();
    assert_eq!(
        argv(find(&p, "web")),
        ["/usr/bin/skiff-agent", "agnhost", "netexec", "--http-port=8080"]
    );
    assert_eq!(
        argv(find(&p, "side")),
        ["/usr/bin/skiff-agent", "agnhost", "serve-hostname"]
    );
    assert_eq!(
        argv(find(&p, "sleeper")),
        ["/usr/bin/skiff-agent", "agnhost", "pause"]
    );
    assert_eq!(argv(find(&p, "setup")), ["sh", "-c", "echo web-0 > /cache/who"]);
    match &find(&p, "custom").exec {
        Exec::Unrunnable { reason, message } => {
            assert_eq!(reason, "ErrImagePull");
            assert!(message.contains("example.com/tool:1"), "{message}");
        }
        other => panic!("custom planned as {other:?}"),
    }
    match &find(&p, "bad-volume").exec {
        Exec::Unrunnable { reason, .. } => assert_eq!(reason, "CreateContainerConfigError"),
        other => panic!("bad-volume planned as {other:?}"),
    }
}

#[test]
fn env_resolves_fields_and_references() {
    let p = plan(&pod(WEB), &ctx()).unwrap();
    let web = find(&p, "web");
    assert_eq!(env_of(web, "IP"), Some("10.244.1.5"));
    assert_eq!(env_of(web, "NODE"), Some("node-1"));
    assert_eq!(env_of(web, "NS"), Some("shop"));
    assert_eq!(env_of(web, "URL"), Some("http://10.244.1.5:8080"));
    assert_eq!(env_of(web, "HOSTNAME"), Some("web-0"));
    assert_eq!(env_of(web, "PATH"), Some(DEFAULT_PATH));
}

#[test]
fn probes_mounts_and_limits() {
    let p = plan(&pod(WEB), &ctx()).unwrap();
    let web = find(&p, "web");
    let r = web.readiness.as_ref().unwrap();
    assert_eq!(
        r.action,
        ProbeAction::Http {
            port: 8080,
            path: "/healthz".into(),
            host: None,
            https: false
        }
    );
    assert_eq!(
        (r.period, r.failure_threshold, r.success_threshold),
        (Duration::from_secs(2), 3, 1)
    );
    let l = web.liveness.as_ref().unwrap();
    assert_eq!(
        l.action,
        ProbeAction::Tcp {
            port: 8080,
            host: None
        }
    );
    assert_eq!(
        (l.initial_delay, l.failure_threshold),
        (Duration::from_secs(3), 5)
    );
    assert_eq!(
        web.mounts[0],
        MountPlan {
            volume: "cache".into(),
            path: "/cache".into(),
            read_only: true
        }
    );
    assert_eq!(web.mounts[1].path, Path::new(SERVICE_ACCOUNT_MOUNT));
    assert_eq!(web.mounts.len(), 2);
    assert_eq!(
        web.limits,
        Limits {
            memory_bytes: Some(64 << 20),
            cpu_millis: Some(250)
        }
    );
}

#[test]
fn unsupported_env_sources_are_config_errors() {
    let p = plan(
        &pod(r#"
metadata: {name: a, uid: u}
spec:
  containers:
  - name: c
    image: agnhost
    env: [{name: S, valueFrom: {secretKeyRef: {name: s, key: k}}}]
"#),
        &ctx(),
    )
    .unwrap();
    assert!(
        matches!(&p.containers[0].exec, Exec::Unrunnable { reason, .. } if reason == "CreateContainerConfigError")
    );
    assert_eq!(p.restart_policy, RestartPolicy::Always);
    assert_eq!(p.grace, Duration::from_secs(30));
    assert_eq!(p.namespace, "default");
}

#[test]
fn pods_without_identity_or_containers_are_refused() {
    assert_eq!(
        plan(
            &pod("metadata: {name: a}\nspec: {containers: [{name: c}]}"),
            &ctx()
        ),
        Err(PlanError::Missing("metadata.uid"))
    );
    assert_eq!(
        plan(
            &pod("metadata: {name: a, uid: u}\nspec: {containers: []}"),
            &ctx()
        ),
        Err(PlanError::NoContainers)
    );
}

#[test]
fn restart_policies() {
    assert!(RestartPolicy::Always.restarts(0));
    assert!(!RestartPolicy::OnFailure.restarts(0));
    assert!(RestartPolicy::OnFailure.restarts(2));
    assert!(!RestartPolicy::Never.restarts(2));
}

fn token_mount(c: &ContainerPlan) -> Option<&MountPlan> {
    c.mounts
        .iter()
        .find(|m| m.path == Path::new(SERVICE_ACCOUNT_MOUNT))
}

const TWO: &str = r#"
metadata: {name: a, namespace: shop, uid: u}
spec:
  serviceAccountName: robot
  initContainers: [{name: init, image: agnhost, args: [pause]}]
  containers: [{name: one, image: agnhost, args: [pause]}, {name: two, image: agnhost, args: [pause]}]
"#;

#[test]
fn every_container_gets_the_service_account_token_read_only() {
    let p = plan(&pod(TWO), &ctx()).unwrap();
    assert_eq!(
        p.volumes.get(SERVICE_ACCOUNT_VOLUME),
        Some(&VolumeSource::ServiceAccountToken(TokenVolume {
            service_account: "robot".into(),
            expiration_seconds: 3607,
        }))
    );
    for c in p.all_containers() {
        let m = token_mount(c).unwrap_or_else(|| panic!("{} has no token mount", c.name));
        assert!(m.read_only);
        assert_eq!(m.volume, SERVICE_ACCOUNT_VOLUME);
    }
    // Without serviceAccountName: the namespace's `default` account.
    let p = plan(&pod(&TWO.replace("serviceAccountName: robot", "")), &ctx()).unwrap();
    assert!(matches!(
        p.volumes.get(SERVICE_ACCOUNT_VOLUME),
        Some(VolumeSource::ServiceAccountToken(t)) if t.service_account == "default"
    ));
}

#[test]
fn automount_follows_the_pod_then_the_service_account() {
    let with = |pod_setting: &str, account: Option<bool>| {
        let yaml = TWO.replace(
            "serviceAccountName: robot",
            &format!("serviceAccountName: robot\n  {pod_setting}"),
        );
        let ctx = PodContext {
            service_account_automount: account,
            ..ctx()
        };
        let p = plan(&pod(&yaml), &ctx).unwrap();
        let mounted = p.all_containers().filter(|c| token_mount(c).is_some()).count();
        let volume = p.volumes.contains_key(SERVICE_ACCOUNT_VOLUME);
        assert_eq!(volume, mounted == 3, "volume and mounts disagree");
        volume
    };
    assert!(with("", None));
    assert!(!with("automountServiceAccountToken: false", None));
    assert!(!with("", Some(false)));
    assert!(with("automountServiceAccountToken: true", Some(false)));
    assert!(!with("automountServiceAccountToken: false", Some(true)));
    assert!(automounts_token(None, None));
}

#[test]
fn a_container_with_its_own_mount_at_the_token_path_keeps_it() {
    let yaml = r#"
metadata: {name: a, uid: u}
spec:
  volumes: [{name: mine, emptyDir: {}}]
  containers:
  - {name: own, image: agnhost, volumeMounts: [{name: mine, mountPath: /var/run/secrets/kubernetes.io/serviceaccount}]}
  - {name: other, image: agnhost}
"#;
    let p = plan(&pod(yaml), &ctx()).unwrap();
    assert_eq!(token_mount(find(&p, "own")).unwrap().volume, "mine");
    assert_eq!(
        token_mount(find(&p, "other")).unwrap().volume,
        SERVICE_ACCOUNT_VOLUME
    );
}

#[test]
fn the_kube_api_access_projection_is_served_and_not_doubled() {
    let yaml = r#"
metadata: {name: a, uid: u}
spec:
  volumes:
  - name: kube-api-access-x7k2p
    projected:
      defaultMode: 420
      sources:
      - serviceAccountToken: {expirationSeconds: 7200, path: token}
      - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
      - downwardAPI: {items: [{path: namespace, fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}}]}
  - name: other-token
    projected: {sources: [{serviceAccountToken: {audience: vault, path: token}}]}
  containers:
  - name: c
    image: agnhost
    volumeMounts: [{name: kube-api-access-x7k2p, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}]
  - name: vault
    image: agnhost
    volumeMounts: [{name: other-token, mountPath: /vault}]
"#;
    let p = plan(&pod(yaml), &ctx()).unwrap();
    assert_eq!(
        p.volumes.get("kube-api-access-x7k2p"),
        Some(&VolumeSource::ServiceAccountToken(TokenVolume {
            service_account: "default".into(),
            expiration_seconds: 7200,
        }))
    );
    assert!(!p.volumes.contains_key(SERVICE_ACCOUNT_VOLUME));
    assert_eq!(find(&p, "c").mounts.len(), 1);
    // A token for another audience is not something this runtime provides.
    assert!(matches!(
        &find(&p, "vault").exec,
        Exec::Unrunnable { reason, .. } if reason == "CreateContainerConfigError"
    ));
}
