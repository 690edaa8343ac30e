// Package v1alpha1 is version v1alpha1 of volume-agent's configuration file
// format: kind AgentConfiguration, apiVersion config.volumeagent.io/v1alpha1.
// Every field is optional; SetDefaults_AgentConfiguration fills the missing ones.
//
// +k8s:deepcopy-gen=package
// +k8s:conversion-gen=github.com/volume-agent/volume-agent/pkg/apis/config
// +k8s:defaulter-gen=TypeMeta
// +groupName=config.volumeagent.io
package v1alpha1
