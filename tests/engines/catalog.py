"""The search-engine nodes the tests run against: what each one is assembled from (Maven Central
coordinates only: no other download host is reachable here) and how it is started.

OpenSearch 2.19.1 is the newest release whose k-NN *and* neural-search plugins Maven Central serves, so it
is the node that proves the native `hybrid` query and search pipelines. OpenSearch 3.5.0 proves the 3.x
line with k-NN (neural-search 3.x is not served: client-side fusion there). The integ-test zips carry no
native k-NN libraries, so these nodes run the `lucene` k-NN engine, never faiss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

JAVA_17 = "/usr/lib/jvm/java-17-openjdk-amd64"
JAVA_25 = "/usr/lib/jvm/temurin-25-jdk-amd64"

PAINLESS_POLICY = """grant {
  permission java.lang.RuntimePermission "createClassLoader";
  permission java.lang.RuntimePermission "getClassLoader";
};
"""


@dataclass(frozen=True)
class JarModule:
    """A module the integ-test zip lacks, rebuilt from plain jars into `modules/<name>/`."""

    name: str
    classname: str
    jars: tuple[str, ...]  # Maven coordinates group:artifact:version
    extends: str = ""
    policy: str = ""


@dataclass(frozen=True)
class EngineSpec:
    name: str  # also the folder and the state file's name
    distribution: str  # "opensearch" or "elasticsearch"
    version: str
    java_home: str
    zip: str  # Maven coordinates of the distribution zip
    plugins: tuple[str, ...] = ()  # Maven coordinates of plugin zips, installed with `opensearch-plugin`
    modules: tuple[JarModule, ...] = ()
    heap: str = "1g"
    settings: dict[str, str] = field(default_factory=dict)
    secure: bool = False  # security on: OpenSearch's demo TLS + basic auth (admin); Elasticsearch: basic auth
    tls: bool = False  # Elasticsearch: HTTPS with a certificate from its own elasticsearch-certutil
    home_of: str = ""  # run from another spec's assembled distribution (same zip and plugins, other settings)


_PAINLESS_2_19 = JarModule(
    name="lang-painless",
    classname="org.opensearch.painless.PainlessPlugin",
    jars=(
        "org.opensearch.plugin:lang-painless:2.19.1",
        "org.opensearch.plugin:opensearch-scripting-painless-spi:2.19.1",
        "org.antlr:antlr4-runtime:4.13.1",
        "org.ow2.asm:asm:9.7",
        "org.ow2.asm:asm-util:9.7",
        "org.ow2.asm:asm-tree:9.7",
        "org.ow2.asm:asm-commons:9.7",
        "org.ow2.asm:asm-analysis:9.7",
    ),
    policy=PAINLESS_POLICY,
)
_ANALYSIS_COMMON_2_19 = JarModule(
    name="analysis-common",
    classname="org.opensearch.analysis.common.CommonAnalysisPlugin",
    jars=("org.opensearch.plugin:analysis-common:2.19.1",),
    extends="lang-painless",
)

# The secured test node's admin password (a local, throwaway node; the security plugin demands a strong one).
ADMIN_PASSWORD = "Ddr-Test-Node-2026!"
_PLUGINS_2_19 = (
    "org.opensearch.plugin:opensearch-knn:2.19.1.0:zip",
    "org.opensearch.plugin:neural-search:2.19.1.0:zip",
)

ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        EngineSpec(
            name="opensearch-2.19.1",
            distribution="opensearch",
            version="2.19.1",
            java_home=JAVA_17,
            zip="org.opensearch.distribution.integ-test-zip:opensearch:2.19.1:zip",
            plugins=_PLUGINS_2_19,
            modules=(_PAINLESS_2_19, _ANALYSIS_COMMON_2_19),
        ),
        EngineSpec(
            name="opensearch-2.19.1-secure",
            distribution="opensearch",
            version="2.19.1",
            java_home=JAVA_17,
            zip="org.opensearch.distribution.integ-test-zip:opensearch:2.19.1:zip",
            plugins=(*_PLUGINS_2_19, "org.opensearch.plugin:opensearch-security:2.19.1.0:zip"),
            modules=(_PAINLESS_2_19, _ANALYSIS_COMMON_2_19),
            heap="768m",
            secure=True,
        ),
        EngineSpec(
            name="opensearch-3.5.0",
            distribution="opensearch",
            version="3.5.0",
            java_home=JAVA_25,
            zip="org.opensearch.distribution.integ-test-zip:opensearch:3.5.0:zip",
            plugins=("org.opensearch.plugin:opensearch-knn:3.5.0.0:zip",),
        ),
    )
}

# Elasticsearch's integ-test zips: security on (basic auth: `elastic` / ADMIN_PASSWORD, plus the file-realm
# user ES_USER with the least-privilege role), no analysis-common (so no stemmer, no pattern tokenizer: the
# test indices use DDR_ELASTICSEARCH__ANALYZER=standard, or client). 8.19.8 serves plain HTTP; 9.2.0 serves
# HTTPS with a CA made at assembly (clients trust it through DDR_ELASTICSEARCH__CA_FILE).
ES_USER = "ddr_search"
ES_USER_PASSWORD = "Ddr-Test-User-2026!"
_ES_SETTINGS = {
    "xpack.security.enabled": "true",
    "xpack.security.http.ssl.enabled": "false",
    "xpack.security.transport.ssl.enabled": "false",
}
for _spec in (
    EngineSpec(
        name="elasticsearch-8.19.8",
        distribution="elasticsearch",
        version="8.19.8",
        java_home=JAVA_17,
        zip="org.elasticsearch.distribution.integ-test-zip:elasticsearch:8.19.8:zip",
        settings=_ES_SETTINGS,
        secure=True,
    ),
    EngineSpec(
        name="elasticsearch-9.2.0",
        distribution="elasticsearch",
        version="9.2.0",
        java_home=JAVA_25,
        zip="org.elasticsearch.distribution.integ-test-zip:elasticsearch:9.2.0:zip",
        settings={
            **_ES_SETTINGS,
            "xpack.security.http.ssl.enabled": "true",
            "xpack.security.http.ssl.key": "certs/http.key",
            "xpack.security.http.ssl.certificate": "certs/http.crt",
        },
        secure=True,
        tls=True,
    ),
):
    ENGINES[_spec.name] = _spec

# Started and stopped by the fault tests alone (they SIGKILL it): the 2.19.1 distribution with a write
# thread pool of one thread and a queue of one, so concurrent bulk requests really get 429.
FAULTS_ENGINE = EngineSpec(
    name="opensearch-2.19.1-faults",
    distribution="opensearch",
    version="2.19.1",
    java_home=JAVA_17,
    zip="org.opensearch.distribution.integ-test-zip:opensearch:2.19.1:zip",
    home_of="opensearch-2.19.1",
    heap="512m",
    settings={"thread_pool.write.size": "1", "thread_pool.write.queue_size": "1"},
)
ENGINES[FAULTS_ENGINE.name] = FAULTS_ENGINE

DEFAULT_ENGINES = (
    "opensearch-2.19.1",
    "opensearch-3.5.0",
    "opensearch-2.19.1-secure",
    "elasticsearch-8.19.8",
    "elasticsearch-9.2.0",
)
