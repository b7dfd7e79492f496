# The balancer, fastlb:latest. Built by docker/build-images.sh on fastlb-base:bookworm, which
# docker/base-image.sh makes from Debian packages: nothing is pulled from a registry.
# The docker-compose.yml stack runs it with the engine's socket mounted, so that its docker
# provider starts the replica containers beside it.
FROM fastlb-base:bookworm
WORKDIR /app
COPY fastlb/ /app/fastlb/
COPY replica/ /app/replica/
COPY conf/ /app/conf/
EXPOSE 5000
# fastlb answers /healthz itself: 200 while it can route to a replica, 503 when none is up.
# python3 is in the base image (curl is not); it prints the answer (docker inspect shows it).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 5000, timeout=2); c.request('GET', '/healthz'); r = c.getresponse(); print(r.status, r.read().decode()); raise SystemExit(r.status != 200)"]
# fastlb stops its replicas and drains requests on SIGTERM.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python3", "-m", "fastlb"]
CMD ["--config", "/app/conf/compose.toml"]
