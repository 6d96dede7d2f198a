FROM nasiko-test-busybox:1
COPY agent.sh /agent.sh
RUN chmod +x /agent.sh && mkdir -p /data
ENV AGENT_VERSION=__VERSION__
EXPOSE 5000
CMD ["nc", "-ll", "-p", "5000", "-e", "/agent.sh"]
