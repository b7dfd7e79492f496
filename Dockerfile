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
# fastlb stops its replicas and drains requests on SIGTERM.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python3", "-m", "fastlb"]
CMD ["--config", "/app/conf/compose.toml"]
