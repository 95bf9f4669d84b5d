#!/usr/bin/env bash
# The kafka service's command in docker-compose.secure.yml. On the first start it formats
# the storage with the SCRAM-SHA-256 users admin, producer, consumer, riverline and broker,
# as `riverline kafka up --secure` does; then it runs the image's own start ("$@",
# /etc/kafka/docker/run), whose format step finds the storage formatted and goes on.
#
# The passwords come from the environment (RIVERLINE_KAFKA_<PRINCIPAL>_PASSWORD). They
# reach StorageTool through a java @argfile (mode 0600, in a 0700 directory, removed once
# read), never through a command line, which any process on the host can read in /proc.
# bash's printf is a builtin: writing the file starts no process.
set -euo pipefail
umask 077

principals=(admin producer consumer riverline broker)
kafka_dist=${RIVERLINE_KAFKA_DIST:-/opt/kafka}
# The healthcheck's login (the broker's own principal; the broker's password is in its
# server.properties already).
client_config=${RIVERLINE_KAFKA_CLIENT_CONFIG:-/tmp/riverline-kafka/client.properties}
data_dir=${KAFKA_LOG_DIRS:?KAFKA_LOG_DIRS is not set}

fail() {
  echo "riverline secure start: $*" >&2
  exit 1
}

for principal in "${principals[@]}"; do
  name="RIVERLINE_KAFKA_${principal^^}_PASSWORD"
  # They sit inside quoted JAAS and SCRAM options: no quotes, commas or brackets.
  [[ ${!name:-} =~ ^[A-Za-z0-9_-]{16,}$ ]] ||
    fail "$name must be 16 or more letters, digits, '-' or '_': openssl rand -hex 32 makes one"
done

# The broker's server.properties as the image renders it from the KAFKA_* variables
# (KafkaDockerWrapper: '_' is '.', '__' is '_', '___' is '-'), so format sees the same.
server_properties() {
  local name key
  for name in $(compgen -e); do
    case $name in
      KAFKA_VERSION | KAFKA_HEAP_OPTS | KAFKA_LOG4J_OPTS | KAFKA_OPTS | KAFKA_JMX_OPTS | \
        KAFKA_JVM_PERFORMANCE_OPTS | KAFKA_GC_LOG_OPTS | KAFKA_LOG4J_ROOT_LOGLEVEL | \
        KAFKA_LOG4J_LOGGERS | KAFKA_TOOLS_LOG4J_LOGLEVEL | KAFKA_JMX_HOSTNAME) continue ;;
      KAFKA_*) ;;
      *) continue ;;
    esac
    key=${name#KAFKA_}
    key=${key,,}
    key=${key//_/.}
    key=${key//.../-}
    key=${key//../_}
    printf '%s=%s\n' "$key" "${!name}"
  done
}

if [[ ! -e $data_dir/meta.properties ]]; then
  echo "riverline secure start: formatting $data_dir with the SCRAM users ${principals[*]}"
  work=$(mktemp -d)
  server_properties >"$work/server.properties"
  {
    printf '"%s"\n' kafka.tools.StorageTool format \
      --cluster-id "${CLUSTER_ID:?CLUSTER_ID is not set}" --config "$work/server.properties"
    for principal in "${principals[@]}"; do
      name="RIVERLINE_KAFKA_${principal^^}_PASSWORD"
      printf '"--add-scram"\n"SCRAM-SHA-256=[name=%s,iterations=8192,password=%s]"\n' \
        "$principal" "${!name}"
    done
  } >"$work/format.args"
  # -XX:-UsePerfData: the JVM would publish its expanded arguments in /tmp/hsperfdata_*.
  if ! "${JAVA_HOME:+$JAVA_HOME/bin/}java" -XX:-UsePerfData -cp "$kafka_dist/libs/*" "@$work/format.args"; then
    rm -rf "$work"
    fail "formatting $data_dir failed (see above)"
  fi
  rm -rf "$work"
fi

mkdir -p "${client_config%/*}"
printf '%s\n' security.protocol=SASL_PLAINTEXT sasl.mechanism=SCRAM-SHA-256 \
  "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"broker\" password=\"$RIVERLINE_KAFKA_BROKER_PASSWORD\";" \
  >"$client_config"

# The broker needs none of the passwords from here on: its own is in the JAAS settings.
for principal in "${principals[@]}"; do
  unset "RIVERLINE_KAFKA_${principal^^}_PASSWORD"
done
umask 022
exec "$@"
