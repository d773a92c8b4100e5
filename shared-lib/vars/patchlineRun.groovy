// Creates the worker run of this build, remembers its id in
// env.PATCHLINE_RUN for patchlineStage and patchlineReport, and links the
// build to the run's status page (the build's description).
def call(Map args = [:]) {
    Map opts = [repos: '', dryRun: false, uiUrl: env.PATCHLINE_UI_URL ?: env.PATCHLINE_URL] + args
    boolean timer = currentBuild.getBuildCauses('hudson.triggers.TimerTrigger$TimerTriggerCause')
    def users = currentBuild.getBuildCauses('hudson.model.Cause$UserIdCause')
    String cause = currentBuild.getBuildCauses().collect { c -> c.shortDescription }.join('; ')
    Map body = [
        trigger: timer ? 'timer' : 'manual',
        cause: cause ?: (timer ? 'timer' : 'Jenkins'),
        jenkins_url: env.BUILD_URL,
        dry_run: opts.dryRun as boolean,
    ]
    if (users) {
        body.started_by = users[0].userId
    }
    List repos = (opts.repos ?: '').tokenize(', ')
    if (repos) {
        body.repos = repos
    }
    def response = patchlineApi(method: 'POST', path: '/runs', body: body)
    if (response.status != 201) {
        error "patchline: cannot create a run: ${patchlineApi.message(response)}"
    }
    String id = readJSON(text: response.content).id.toString()
    env.PATCHLINE_RUN = id
    String page = "${opts.uiUrl}/ui/runs/${id}"
    currentBuild.description = "<a href=\"${page}\">patchline run ${id}</a>"
    echo "patchline: run ${id} (${body.trigger}) at ${env.PATCHLINE_URL}/api/v1/runs/${id}, status page ${page}"
    return id
}
