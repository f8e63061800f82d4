# The demo target for Compose: a plain OpenSSH server trusting Gatehouse's identity key.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /run/sshd /root/.ssh
CMD ["/bin/sh", "-c", "until [ -f /keys/target_identity.pub ]; do sleep 1; done; cp /keys/target_identity.pub /root/.ssh/authorized_keys; chmod 600 /root/.ssh/authorized_keys; ssh-keygen -A; exec /usr/sbin/sshd -D -e -o PasswordAuthentication=no"]
